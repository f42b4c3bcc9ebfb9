"""scripts/modern_study.py, the command behind docs/modern.md: its attention model by hand, and the doc it writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

from genprof.roofline.hardware import PROFILES

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "modern_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("modern_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unfused_attention_is_three_kernels_on_their_rooflines(study):
    hw = PROFILES["h100"]
    bh, lq, lk, d = 48, 4429, 4429, 64  # one SD3 joint attention call at batch 2
    flops = 4 * bh * lq * lk * d
    io = 2 * bh * (2 * lq + 2 * lk) * d  # q, k, v, out in bfloat16
    row = pd.DataFrame({"op": ["aten::scaled_dot_product_attention", "aten::linear"], "seq_q": [lq, 0],
                        "seq_kv": [lk, 0], "batch_heads": [bh, 0], "calls": [3, 1], "bytes_per_call": [io, 1.0],
                        "t_compute_s": [flops / hw.flops("bf16"), 1.0]})
    scores = 2 * bh * lq * lk
    qk = max(flops / 2 / hw.flops("bf16"), (io / 2 + scores) / hw.bandwidth)  # QK^T writes the scores
    softmax = 2 * scores / hw.bandwidth  # reads and writes them
    pv = max(flops / 2 / hw.flops("bf16"), (io / 2 + scores) / hw.bandwidth)  # PV reads them
    got = study.unfused_attention_s(row, hw)
    assert got[0] == pytest.approx(3 * (qk + softmax + pv)) and got[1] == 0.0


def test_decoder_share_at_the_published_step_count_scales_the_denoising_phase_only(study):
    # sd3 at small: 5 steps of 0.2 s, 28 at paper: 2.0 s total + 1.0 s x (28/5 - 1) = 6.6 s, of which 0.5 s decode
    t = pd.DataFrame({"phase": ["text_encoder", "denoise", "decode", "total", "denoise"],
                      "step": [-1, -1, -1, -1, 0], "time_s": [0.1, 1.0, 0.5, 2.0, 0.2]})
    assert study.paper_steps_share("sd3", "small", t, "decode") == pytest.approx(0.5 / 6.6)


def test_the_stated_command_writes_the_doc_and_the_figure(study, tmp_path):
    written = study.main(["--no-measure", "--only", "stable-diffusion", "pixart", "--paper-size", "tiny",
                          "--out", str(tmp_path / "runs"), "--doc", str(tmp_path / "modern.md"),
                          "--figure", str(tmp_path / "modern_families")])
    assert [p.name for p in written] == ["modern.md", "modern_families.png", "modern_families.svg"]
    doc = (tmp_path / "modern.md").read_text()
    assert doc.splitlines()[2].startswith("Reproduce: `python scripts/modern_study.py --paper-size tiny --out ")
    assert "--no-measure`" in doc.splitlines()[2]
    table = [line for line in doc.splitlines() if line.startswith("| stable-diffusion | 2023 study |")
             or line.startswith("| pixart | modern |")]
    assert len(table) == 2
    assert "## Not measured" in doc
