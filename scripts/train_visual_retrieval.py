"""Train the tiny LLaVA of the visual retrieval task and save it to genprof/assets/retrieval-llava.

The model (tiny CLIP vision tower + MLP projector + tiny Llama, see
`genprof.workloads.visual_retrieval.model_config`) is trained end to end on
fresh batches of the task (`make_batch`): cross-entropy on the value token
after `<q> KEY` and on `<eos>` after the value. Deterministic: fixed seeds,
one torch thread, no data loader workers; a few minutes on one CPU core.
Writes config.json + model.safetensors (a transformers checkpoint that
`genprof run llava --weights DIR` loads) and prints the held-out accuracy.

    python scripts/train_visual_retrieval.py [--steps 3000] [--out genprof/assets/retrieval-llava]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from genprof.workloads import visual_retrieval as vr


def build(seed: int = 0) -> torch.nn.Module:
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(seed)
    return LlavaForConditionalGeneration(vr.model_config())


def logits_at_answer(model: torch.nn.Module, batch: vr.Batch) -> torch.Tensor:
    """Logits after `<q> KEY` (the answer) and after the value (`<eos>`), teacher-forced."""
    ids = torch.cat([batch.input_ids(), batch.answers[:, None]], dim=1)
    logits = model(input_ids=ids, pixel_values=batch.pixel_values).logits
    return logits[:, -2:]


@torch.no_grad()
def accuracy(model: torch.nn.Module, n: int = 1024, seed: int = vr.EVAL_SEED) -> float:
    model.eval()
    b = vr.make_batch(n, seed)
    pred = logits_at_answer(model, b)[:, 0].argmax(-1)
    model.train()
    return float((pred == b.answers).float().mean())


def train(steps: int, batch: int, lr: float, log_every: int = 100) -> tuple[torch.nn.Module, float]:
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model = build(0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = max(steps // 20, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    t0 = time.perf_counter()
    for step in range(steps):
        b = vr.make_batch(batch, seed=step)
        out = logits_at_answer(model, b)
        eos = torch.full_like(b.answers, vr.EOS)
        loss = F.cross_entropy(out[:, 0], b.answers) + 0.1 * F.cross_entropy(out[:, 1], eos)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if (step + 1) % log_every == 0 or step == steps - 1:
            print(f"step {step + 1:5d}  loss {loss.item():.4f}  {time.perf_counter() - t0:6.1f} s", flush=True)
    acc = accuracy(model)  # switches the model back to train mode
    return model.eval(), acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--out", default=str(vr.ASSET))
    args = ap.parse_args()
    model, acc = train(args.steps, args.batch, args.lr)
    print(f"held-out accuracy: {acc:.4f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    print(f"saved {out} ({sum(p.stat().st_size for p in out.iterdir()) / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
