"""A synthetic retrieval task: find the value of a key among distractor pairs.

A prompt is `k1 v1 k2 v2 ... kN vN SEP kq` and its answer is `vq`, the value
that followed `kq` in the prompt. Keys and values come from disjoint
vocabularies (keys: ids 1..KEYS, values: KEYS+1..KEYS+VALUES, SEP = 0); the N
keys of one prompt are distinct, values are drawn with replacement. With the
default 64 pairs a prompt is 130 tokens, nearly all of them distractors: a
model whose attention finds the one pair that matters. It serves as the quality
check of lossy optimizations (token pruning), where random weights would give
meaningless quality numbers.

- `make_batch(n, n_pairs, seed)`: `n` prompts (n, 2*n_pairs + 2) and answers (n,).
- `make_training_batch(...)`: the same pairs followed by several queries with
  their answers (multi-query recall), loss targets at every answer.
- `accuracy(model, ...)`: greedy first-token accuracy of a causal LM on a fixed eval set.
A small Llama trained on it by `scripts/train_retrieval.py` ships in
`genprof/assets/retrieval-llama/` (`RETRIEVAL_WEIGHTS`).
Not here: training (the script), the `llm` workload (which takes these prompts with `--set task=retrieval`).
"""

from __future__ import annotations

from pathlib import Path

import torch

SEP = 0
KEYS = 64
VALUES = 64
VOCAB = 1 + KEYS + VALUES
N_PAIRS = 64  # default pairs per prompt: 2 * 64 + 2 = 130 tokens
EVAL_N, EVAL_SEED = 200, 1234  # the fixed eval set
RETRIEVAL_WEIGHTS = str(Path(__file__).resolve().parent.parent / "assets" / "retrieval-llama")


def _pairs(n: int, n_pairs: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    if not 1 <= n_pairs <= KEYS:
        raise ValueError(f"n_pairs must be in [1, {KEYS}], got {n_pairs}")
    keys = torch.rand(n, KEYS, generator=gen).argsort(dim=1)[:, :n_pairs] + 1
    values = torch.randint(0, VALUES, (n, n_pairs), generator=gen) + 1 + KEYS
    return keys, values


def _interleave(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    return torch.stack([keys, values], dim=2).reshape(keys.shape[0], -1)


def make_batch(n: int, n_pairs: int = N_PAIRS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` prompts `k1 v1 ... kN vN SEP kq` (long, (n, 2N+2)) and their answers `vq` (long, (n,))."""
    gen = torch.Generator().manual_seed(seed)
    keys, values = _pairs(n, n_pairs, gen)
    q = torch.randint(0, n_pairs, (n,), generator=gen)
    rows = torch.arange(n)
    sep = torch.full((n, 1), SEP, dtype=torch.long)
    prompts = torch.cat([_interleave(keys, values), sep, keys[rows, q][:, None]], dim=1)
    return prompts, values[rows, q]


def make_training_batch(n: int, n_pairs: int, n_queries: int,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs, SEP, then `n_queries` (<= n_pairs) distinct queried keys each followed by its value;
    targets -100 except at each query key (its value)."""
    keys, values = _pairs(n, n_pairs, gen)
    q = torch.rand(n, n_pairs, generator=gen).argsort(dim=1)[:, :n_queries]  # distinct queries
    qk, qv = keys.gather(1, q), values.gather(1, q)
    sep = torch.full((n, 1), SEP, dtype=torch.long)
    ids = torch.cat([_interleave(keys, values), sep, _interleave(qk, qv)], dim=1)
    targets = torch.full_like(ids, -100)
    first = 2 * n_pairs + 1  # position of the first query key
    targets[:, first:-1:2] = qv  # at query key i, predict its value
    return ids, targets


@torch.inference_mode()
def predict(model: torch.nn.Module, prompts: torch.Tensor, batch: int = 50) -> torch.Tensor:
    """Greedy next token after each prompt (a transformers causal LM)."""
    out = []
    for i in range(0, prompts.shape[0], batch):
        logits = model(prompts[i:i + batch].to(next(model.parameters()).device), logits_to_keep=1).logits
        out.append(logits[:, -1].argmax(-1).cpu())
    return torch.cat(out)


def score(predicted: torch.Tensor, answers: torch.Tensor) -> float:
    """Fraction of predictions equal to the answers."""
    return float((predicted.cpu() == answers.cpu()).float().mean())


def accuracy(model: torch.nn.Module, n: int = EVAL_N, n_pairs: int = N_PAIRS, seed: int = EVAL_SEED) -> float:
    """Greedy first-token accuracy on the fixed eval set."""
    prompts, answers = make_batch(n, n_pairs, seed)
    return score(predict(model, prompts), answers)
