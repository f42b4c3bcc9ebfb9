"""Real weights from a local directory (safetensors), written by the test itself."""

from __future__ import annotations

import torch

import genprof
from genprof.spec import RunSpec
from genprof.workloads.base import NullPhases


def _infer(spec):
    built = genprof.build(spec)
    with torch.inference_mode():
        return built, built.infer(NullPhases())


def test_llm_loads_saved_weights_and_reproduces_the_output(tmp_path):
    built, ref = _infer(RunSpec("llm", size="tiny", tokens=4, seed=7))
    built.parts["model"].save_pretrained(tmp_path, safe_serialization=True)
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    _, out = _infer(RunSpec("llm", size="tiny", tokens=4, seed=7, weights=str(tmp_path)))
    assert torch.equal(out, ref)


def test_stable_diffusion_loads_a_diffusers_layout_and_reproduces_the_image(tmp_path):
    built, ref = _infer(RunSpec("stable-diffusion", size="tiny", seed=3))
    for name, part in built.parts.items():
        part.save_pretrained(tmp_path / name, safe_serialization=True)
    _, out = _infer(RunSpec("stable-diffusion", size="tiny", seed=3, weights=str(tmp_path)))
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_random_weights_differ_with_the_seed():
    _, a = _infer(RunSpec("llm", size="tiny", tokens=4, seed=1))
    _, b = _infer(RunSpec("llm", size="tiny", tokens=4, seed=2))
    assert not torch.equal(a, b)
