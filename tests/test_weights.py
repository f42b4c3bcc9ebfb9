"""Real weights from a local directory (safetensors), written by the test itself."""

from __future__ import annotations

import pytest
import torch

import genprof
from genprof.spec import RunSpec
from genprof.phases import NullPhases


def _infer(spec):
    built = genprof.build(spec)
    with torch.inference_mode():
        return built, built.run(NullPhases())


def test_llm_loads_saved_weights_and_reproduces_the_output(tmp_path):
    built, ref = _infer(RunSpec("llm", size="tiny", tokens=4, seed=7))
    built.parts["model"].save_pretrained(tmp_path, safe_serialization=True)
    assert any(p.suffix == ".safetensors" for p in tmp_path.iterdir())
    _, out = _infer(RunSpec("llm", size="tiny", tokens=4, seed=7, weights=str(tmp_path)))
    assert torch.equal(out, ref)


def _schedulers(workload: str, built) -> dict:
    """The scheduler configs a diffusers-layout directory carries next to the parts (sub-folder: scheduler)."""
    from diffusers import AmusedScheduler, DDIMScheduler

    from genprof.workloads import imagen, make_a_video, prod_image

    if workload == "stable-diffusion":
        return {"scheduler": DDIMScheduler()}
    if workload == "imagen":
        return dict(zip(("scheduler", "sr_scheduler"), imagen.schedulers(None)))
    if workload == "make-a-video":
        return {"scheduler": make_a_video.make_scheduler(None)}
    if workload == "prod-image":
        return {"scheduler": prod_image.make_scheduler(None)}
    if workload == "muse":  # aMUSEd's scheduler config names the mask token: the transformer's last id
        return {"scheduler": AmusedScheduler(mask_token_id=built.parts["transformer"].config.vocab_size - 1)}
    return {}


# workload, output shape, tolerance
ROUND_TRIPS = [
    ("stable-diffusion", (1, 3, 16, 16), 1e-5),  # text_encoder/, unet/, vae/
    ("imagen", (1, 3, 32, 32), 1e-4),  # text_encoder/, unet/, sr_unet/
    ("make-a-video", (1, 3, 4, 16, 16), 1e-4),  # text_encoder/, unet/, vae/
    ("prod-image", (1, 3, 16, 16), 1e-4),  # text_encoder/, text_encoder_2/, unet/, vae/
    ("cm3leon", (1, 3, 8, 8), 1e-4),  # model/ (transformers), vqvae/ (diffusers)
    ("parti", (1, 3, 8, 8), 1e-4),  # model/ (transformers), vqvae/ (diffusers)
    ("muse", (1, 3, 16, 16), 1e-4),  # text_encoder/, transformer/, vqvae/
    ("pixart", (1, 3, 16, 16), 1e-4),  # text_encoder/, transformer/, vae/
    ("sd3", (1, 3, 16, 16), 1e-4),  # text_encoder/, text_encoder_2/, text_encoder_3/, transformer/, vae/
    ("flux", (1, 3, 16, 16), 1e-4),  # text_encoder/, text_encoder_2/, transformer/, vae/
    ("cogvideox", (1, 3, 9, 16, 24), 1e-4),  # text_encoder/ (T5), transformer/, vae/ (3D causal)
    ("wan", (1, 3, 5, 32, 48), 1e-4),  # text_encoder/ (UMT5), transformer/, vae/ (Wan VAE)
]


@pytest.mark.parametrize("workload,shape,tol", ROUND_TRIPS, ids=[c[0] for c in ROUND_TRIPS])
def test_loads_a_saved_layout_and_reproduces_the_output(tmp_path, workload, shape, tol):
    built, ref = _infer(RunSpec(workload, size="tiny", seed=3))
    for name, part in built.parts.items():  # one save_pretrained sub-folder per part
        part.save_pretrained(tmp_path / name, safe_serialization=True)
    for name, scheduler in _schedulers(workload, built).items():
        scheduler.save_pretrained(tmp_path / name)
    _, out = _infer(RunSpec(workload, size="tiny", seed=3, weights=str(tmp_path)))
    assert out.shape == ref.shape == shape
    torch.testing.assert_close(out, ref, rtol=tol, atol=tol)


def test_muse_takes_the_mask_token_from_the_scheduler_config(tmp_path):
    from diffusers import AmusedScheduler

    built, ref = _infer(RunSpec("muse", size="tiny", seed=3))
    for name, part in built.parts.items():
        part.save_pretrained(tmp_path / name, safe_serialization=True)
    AmusedScheduler(mask_token_id=0).save_pretrained(tmp_path / "scheduler")
    _, out = _infer(RunSpec("muse", size="tiny", seed=3, weights=str(tmp_path)))
    assert not torch.equal(out, ref)


def test_random_weights_differ_with_the_seed():
    _, a = _infer(RunSpec("llm", size="tiny", tokens=4, seed=1))
    _, b = _infer(RunSpec("llm", size="tiny", tokens=4, seed=2))
    assert not torch.equal(a, b)
