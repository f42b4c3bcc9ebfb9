"""Train the small retrieval Llama shipped in genprof/assets/retrieval-llama/.

The task (genprof.workloads.retrieval): `k1 v1 ... kN vN SEP kq` -> `vq`.
Training uses multi-query batches (the pairs, SEP, then several query/answer
pairs, loss at every answer), a curriculum on the number of pairs (short
prompts first: the number of pairs grows by half whenever the running
accuracy on the training batches passes 90%, up to 128), AdamW with warm-up,
a constant rate, and cosine decay over the last 20% of the steps.
Deterministic: fixed seeds, one torch thread, CPU. Writes config.json + model.safetensors (float16, about 1 MB); the
`llm` workload loads it as float32 with `--weights genprof/assets/retrieval-llama`.

    python scripts/train_retrieval.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from genprof.workloads import retrieval as R

CONFIG = dict(vocab_size=R.VOCAB, hidden_size=128, intermediate_size=256, num_hidden_layers=6,
              num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
              tie_word_embeddings=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--tokens-per-batch", type=int, default=1024)
    ap.add_argument("--queries", type=int, default=64, help="queries per training prompt (at most its pairs)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--out", default=R.RETRIEVAL_WEIGHTS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-pairs", type=int, default=4)
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config = LlamaConfig(**CONFIG)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(args.seed)
    warmup = max(1, args.steps // 20)
    t0 = time.perf_counter()
    top, ema = args.start_pairs, 0.0
    for step in range(args.steps):
        frac = step / args.steps
        decay = 1.0 if frac < 0.8 else 0.5 * (1 + math.cos(math.pi * (frac - 0.8) / 0.2))
        lr = args.lr * min(1.0, (step + 1) / warmup) * decay
        for g in opt.param_groups:
            g["lr"] = lr
        # adaptive curriculum: more pairs once the current ones are mostly answered
        n_pairs = int(torch.randint(max(2, top // 2), top + 1, (1,), generator=gen))
        queries = min(args.queries, n_pairs)
        length = 2 * n_pairs + 1 + 2 * queries
        n = max(4, args.tokens_per_batch // length)
        ids, targets = R.make_training_batch(n, n_pairs, queries, gen)
        model.train()
        logits = model(ids).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            at = targets != -100
            batch_acc = float((logits.argmax(-1)[at] == targets[at]).float().mean())
        ema = 0.9 * ema + 0.1 * batch_acc
        if ema > 0.9 and top < R.N_PAIRS:
            top, ema = min(R.N_PAIRS, int(top * 1.5) + 1), 0.0
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d} pairs<={top:3d} loss {loss.item():.4f} batch acc {batch_acc:.3f} lr {lr:.2e} "
                  f"{time.perf_counter() - t0:6.1f}s", flush=True)
    model.eval()
    acc = R.accuracy(model)
    print(f"eval accuracy ({R.EVAL_N} prompts, {R.N_PAIRS} pairs): {acc:.4f}; "
          f"trained in {time.perf_counter() - t0:.1f}s")
    model.to(torch.float16).save_pretrained(args.out)
    print(f"saved to {args.out}")


if __name__ == "__main__":
    main()
