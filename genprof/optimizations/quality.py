"""The quality of a lossy optimization against the unoptimized model, on the same inputs: one measure for all.

The reference is the same engine without its token policies (same model,
inputs, schedule and attention backend), decoding greedily; the optimized
engine is then teacher-forced on the reference's tokens, so every position is
compared on the same context. Reported: next-token agreement (every position,
the first, the decoded ones), KL(reference || optimized) of the next-token
distribution (first position: mean and max over the batch; every position:
mean), the share of samples whose measured greedy output equals the
reference's, and, where the inputs carry a task's answers, the accuracy of
both on the first token. Runs outside every timed region.
Not here: what the policies do (their own files).
"""

from __future__ import annotations

from typing import Any

import torch

REFERENCE = "the unoptimized model on the same inputs (greedy); the optimized one teacher-forced on its tokens"


@torch.inference_mode()
def reference(built: Any) -> Any:
    """The reference generation: `built`'s engine without its token policies, greedy, every logit kept."""
    return built.engine.configure(policies=()).run(collect=True)


@torch.inference_mode()
def measure(built: Any, output: Any, ref: Any = None) -> dict[str, Any]:
    """Quality of `built` (whose engine carries the lossy policies) given the measured `output` tokens;
    `ref`: `reference(built)` when already computed (it depends on the model and inputs only)."""
    ref = reference(built) if ref is None else ref
    new = built.engine.run(force=ref.tokens, collect=True, record=False)
    return compare(ref.tokens, ref.logits, new.logits, output, built.inputs.get("answers"))


def compare(ref_tokens: torch.Tensor, ref_logits: list[torch.Tensor], logits: list[torch.Tensor],
            output: Any = None, answers: torch.Tensor | None = None) -> dict[str, Any]:
    """Agreement and KL of `logits` (per position, teacher-forced) against the reference's."""
    ref = torch.stack(ref_logits, 1).float().log_softmax(-1)  # (batch, positions, vocab)
    new = torch.stack(logits, 1).float().log_softmax(-1)
    kl = (ref.exp() * (ref - new)).sum(-1)  # KL(reference || optimized) per position
    agree = (new.argmax(-1) == ref_tokens).float()
    out: dict[str, Any] = {
        "reference": REFERENCE,
        "first_token_agreement": float(agree[:, 0].mean()),
        "next_token_agreement": float(agree.mean()),
        "next_token_agreement_decode": float(agree[:, 1:].mean()) if agree.shape[1] > 1 else None,
        "first_token_kl": float(kl[:, 0].mean()),
        "first_token_kl_max": float(kl[:, 0].max()),
        "kl_mean": float(kl.mean()),
        "positions": int(agree.shape[1]), "samples": int(agree.shape[0]),
    }
    if isinstance(output, torch.Tensor) and output.shape == ref_tokens.shape:
        out["greedy_sequence_match"] = float((output == ref_tokens).all(dim=1).float().mean())
    if answers is not None:
        answers = answers.to(ref_tokens.device)
        out["accuracy"] = float((new[:, 0].argmax(-1) == answers).float().mean())
        out["accuracy_unpruned"] = float((ref_tokens[:, 0] == answers).float().mean())
    return out
