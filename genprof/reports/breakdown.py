"""Breakdowns of the op table: time per family, phase, module, ... with shares.

Functions from a tidy table to a tidy table (no plotting here). Times are
summed within each repeat, then averaged over repeats; the spread across
repeats is kept next to the mean.
"""

from __future__ import annotations

from typing import Sequence

import pandas as pd

from genprof.profiler.taxonomy import FAMILIES


def breakdown(ops: pd.DataFrame, by: str | Sequence[str] = "family", time: str = "total_time_s") -> pd.DataFrame:
    """Time per group: mean over repeats, its stdev, share of the total, calls, FLOPs, bytes,
    and the achieved FLOP/s and bytes/s.

    Groups also split by run when the table holds several runs.
    """
    by = [by] if isinstance(by, str) else list(by)
    keys = (["run_id"] if ops["run_id"].nunique() > 1 else []) + by
    per_repeat = ops.groupby(keys + ["repeat"], dropna=False, observed=True).agg(
        time_s=(time, "sum"), calls=("calls", "sum"), flops=("flops", "sum"), bytes=("bytes", "sum"))
    g = per_repeat.groupby(keys, dropna=False, observed=True)
    out = g.agg(time_s=("time_s", "mean"), time_stdev_s=("time_s", "std"), calls=("calls", "mean"),
                flops=("flops", "mean"), bytes=("bytes", "mean")).reset_index()
    out["time_stdev_s"] = out["time_stdev_s"].fillna(0.0)
    # achieved rates (meaningless on the meta device, where times are not real)
    out["flop_per_s"] = out["flops"] / out["time_s"].where(out["time_s"] > 0)
    out["bytes_per_s"] = out["bytes"] / out["time_s"].where(out["time_s"] > 0)
    if keys[0] == "run_id" and len(keys) > 1:
        out["share"] = out["time_s"] / out.groupby("run_id")["time_s"].transform("sum")
    else:
        out["share"] = out["time_s"] / out["time_s"].sum()
    if by == ["family"]:
        order = {f: i for i, f in enumerate(FAMILIES)}
        out = out.sort_values(keys[:-1] + ["family"], key=lambda s: s.map(order) if s.name == "family" else s)
    else:
        out = out.sort_values("time_s", ascending=False)
    return out.reset_index(drop=True)


def top_ops(ops: pd.DataFrame, n: int = 15) -> pd.DataFrame:
    """The n most expensive (op, family) pairs, excluding overhead."""
    real = ops[ops["family"] != "Overhead"]
    return breakdown(real, by=["op", "family"]).head(n)


def attention_calls(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per attention computation: fused kernels, or the softmax of an unfused one.

    (An unfused attention has three rows, matmul/softmax/matmul; its softmax alone
    carries the unambiguous sequence lengths, so it stands for the call.)
    """
    from genprof.profiler.taxonomy import FUSED_ATTENTION

    att = ops[ops["family"] == "Attention"]
    return att[att["op"].isin(FUSED_ATTENTION) | att["op"].str.contains("softmax")]


def block_of(module: str) -> str:
    """The block a module belongs to: its path up to the first numbered component.

    `unet.down_blocks.1.attentions.0.transformer_blocks.0.attn1` -> `unet.down_blocks.1`;
    `model.model.layers.7.self_attn` -> `model.model.layers.7`; `unet.mid_block...` -> up to `mid_block`.
    """
    parts = module.split(".")
    for i, p in enumerate(parts):
        if p.isdigit() or p.startswith("mid"):
            return ".".join(parts[: i + 1])
    return ".".join(parts[:2])


def seq_profile(ops: pd.DataFrame, per_step: bool = False) -> pd.DataFrame:
    """The sequence-length profile of a run: per phase, block and attention kind,
    the query and key lengths, batch x heads and head dim of its attention calls
    (first repeat). With per_step=False, steps are folded: seq ranges become
    min/max columns and `steps` counts them.
    """
    att = attention_calls(ops)
    att = att[att["repeat"] == att["repeat"].min()].copy()
    att["block"] = att["module"].map(block_of)
    run_keys = ["run_id"] if att["run_id"].nunique() > 1 else []
    keys = run_keys + ["phase", "block", "attention_kind"]
    if per_step:
        cols = keys + ["step", "seq_q", "seq_kv", "batch_heads", "head_dim"]
        return att.groupby(cols, sort=False, dropna=False).agg(calls=("calls", "sum"), flops=("flops", "sum"),
                                                 time_s=("total_time_s", "sum")).reset_index()
    return att.groupby(keys, sort=False, dropna=False).agg(
        seq_q_min=("seq_q", "min"), seq_q_max=("seq_q", "max"), seq_kv_min=("seq_kv", "min"),
        seq_kv_max=("seq_kv", "max"), batch_heads=("batch_heads", "max"), head_dim=("head_dim", "max"),
        steps=("step", "nunique"), calls=("calls", "sum"), flops=("flops", "sum"),
        time_s=("total_time_s", "sum")).reset_index()


def family_summary(ops: pd.DataFrame) -> dict[str, dict[str, float]]:
    """run.json's `family_share` and `family_time_s` of an op table."""
    fam = breakdown(ops, "family")
    return {"family_share": dict(zip(fam["family"], fam["share"].round(6))),
            "family_time_s": dict(zip(fam["family"], fam["time_s"]))}


def counts(ops: pd.DataFrame, by: str = "family") -> pd.DataFrame:
    """Calls, FLOPs and bytes per group (Overhead rows left out), most FLOPs first: what a run on the meta
    device counted."""
    g = ops[ops["family"] != "Overhead"].groupby(by)[["calls", "flops", "bytes"]].sum()
    return g.sort_values("flops", ascending=False)
