"""Train the small retrieval Llama shipped in genprof/assets/retrieval-llama/.

The task (genprof.workloads.retrieval): `k1 v1 ... kN vN SEP kq` -> `vq`.
Training uses multi-query batches (the pairs, SEP, then a few query/answer
pairs, loss at every answer) and a curriculum on the number of pairs (short
prompts first: the most pairs grows by half whenever the running accuracy on
the training batches passes 95%, up to the task's 64), AdamW with warm-up, then
`--final-steps` more steps at full length with cosine decay. The queries per
prompt stay few (a quarter of the pairs, at least 2): when every pair is
queried, answering by elimination (a value not yet answered) gets about a third
right and the training settles there instead of learning to look the key up.
The curriculum trains a 2-layer model (the two layers a lookup needs: one
copies each key into the position of its value, one matches the queried key);
deeper models trained from scratch stayed on the elimination plateau here.
Then the model grows to 6 layers (the new ones on top, starting as identities)
and all of them train on together at full length: a model whose lookup
happens early, which is what token pruning at later layers assumes.
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
    ap.add_argument("--max-steps", type=int, default=6000, help="stop the curriculum here at the latest")
    ap.add_argument("--final-steps", type=int, default=800, help="steps at full length after the curriculum")
    ap.add_argument("--tokens-per-batch", type=int, default=2048)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--layers", type=int, default=CONFIG["num_hidden_layers"])
    ap.add_argument("--core-layers", type=int, default=2,
                    help="train this many layers through the curriculum, then grow to --layers")
    ap.add_argument("--out", default=R.RETRIEVAL_WEIGHTS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start-pairs", type=int, default=8)
    args = ap.parse_args()

    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    config = LlamaConfig(**{**CONFIG, "num_hidden_layers": min(args.core_layers, args.layers)})
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    grown = config.num_hidden_layers == args.layers
    gen = torch.Generator().manual_seed(args.seed)
    warmup = 100
    t0 = time.perf_counter()
    top, ema, final_from = args.start_pairs, 0.0, None
    step = 0
    while True:
        if final_from is None and (top >= R.N_PAIRS and ema > 0.95 or step >= args.max_steps):
            final_from = step
            if not grown:  # the circuit is learned: add the remaining layers on top, as identities
                model, opt = grow(model, args.layers, args.lr, args.seed)
                grown = True
                print(f"step {step:5d} grown to {args.layers} layers", flush=True)
        if final_from is not None and step >= final_from + args.final_steps:
            break
        frac = 0.0 if final_from is None else (step - final_from) / args.final_steps
        lr = args.lr * min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        lo = R.N_PAIRS // 2 if final_from is not None else max(2, top // 2)
        n_pairs = int(torch.randint(lo, top + 1, (1,), generator=gen))
        queries = max(2, n_pairs // 4)
        n = max(4, args.tokens_per_batch // (2 * n_pairs + 1 + 2 * queries))
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
        if final_from is None and ema > 0.95 and top < R.N_PAIRS:
            top, ema = min(R.N_PAIRS, int(top * 1.5) + 1), 0.0
        if step % 50 == 0:
            print(f"step {step:5d} pairs<={top:3d} loss {loss.item():.4f} acc(ema) {ema:.3f} lr {lr:.2e} "
                  f"{time.perf_counter() - t0:6.1f}s", flush=True)
        step += 1
    model.eval()
    acc = R.accuracy(model)
    print(f"eval accuracy ({R.EVAL_N} prompts, {R.N_PAIRS} pairs): {acc:.4f}; {step} steps, "
          f"trained in {time.perf_counter() - t0:.1f}s")
    model.to(torch.float16).save_pretrained(args.out)
    print(f"saved to {args.out}")


def grow(model: torch.nn.Module, layers: int, lr: float, seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A deeper copy of `model`: its layers first, then new ones whose output projections (attention o_proj,
    MLP down_proj) start at zero, so each new layer starts as the identity on the residual stream."""
    from transformers import LlamaForCausalLM

    config = model.config.__class__(**{**model.config.to_dict(), "num_hidden_layers": layers})
    config._attn_implementation = model.config._attn_implementation
    torch.manual_seed(seed + 1)
    deeper = LlamaForCausalLM(config)
    missing, unexpected = deeper.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(".layers." in k for k in missing), (missing, unexpected)
    with torch.no_grad():
        for layer in deeper.model.layers[model.config.num_hidden_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    return deeper, torch.optim.AdamW(deeper.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))


if __name__ == "__main__":
    main()
