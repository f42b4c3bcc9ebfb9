"""phenaki: the CLI at tiny size, attention shapes at paper size on the meta device, a causal
C-ViViT decoder, real weights from safetensors files, and the shape of the decoded video."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import run_cli

import genprof
from genprof.errors import GenprofError
from genprof.profiler.scopes import NO_STEP
from genprof.spec import RunSpec
from genprof.phases import NullPhases
from genprof.workloads.phenaki import PART_NAMES, mask_schedule, save_weights

PHASES = {"text_encoder", "decode_tokens", "video_decode"}


def _infer(spec: RunSpec):
    built = genprof.build(spec)
    with torch.inference_mode():
        return built, built.run(NullPhases())


@pytest.fixture(scope="module")
def paper_meta(tmp_path_factory):
    res = genprof.run("phenaki", device="meta", size="paper", steps=1, out=tmp_path_factory.mktemp("meta"))
    assert res.ok, res.meta.get("traceback")
    return res


def test_cli_tiny_run_has_three_phases_and_one_step_per_parallel_decoding_step(tmp_path):
    r = run_cli("run", "phenaki", "--size", "tiny", "--repeats", "1", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    run_dir = Path(r.stdout.split("run: ", 1)[1].split()[0])
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "ok"
    steps = meta["info"]["steps"]
    assert steps == 3  # the tiny preset
    assert set(meta["summary"]["phases"]) == PHASES
    assert meta["summary"]["steps"]["decode_tokens"]["steps_per_repeat"] == steps
    assert set(meta["summary"]["steps"]) == {"decode_tokens"}

    ops = pd.read_parquet(run_dir / "ops.parquet")
    assert PHASES <= set(ops["phase"])
    dec = ops[ops["phase"] == "decode_tokens"]
    assert set(dec.loc[dec["part"] == "transformer", "step"]) == set(range(steps))
    assert set(dec.loc[dec["step"] == NO_STEP, "part"]) <= {""}  # between steps only the loop runs
    # each part runs in its own phase
    assert set(ops.loc[ops["part"] == "text_encoder", "phase"]) == {"text_encoder"}
    assert set(ops.loc[ops["part"] == "transformer", "phase"]) == {"decode_tokens"}
    assert set(ops.loc[ops["part"] == "cvivit", "phase"]) == {"video_decode"}
    att = ops[(ops["family"] == "Attention") & ops["part"].isin(["transformer", "cvivit"])]
    assert set(att["attention_kind"]) == {"self", "cross", "spatial-self", "temporal-self"}
    assert set(att.loc[att["part"] == "cvivit", "attention_kind"]) == {"spatial-self", "temporal-self"}


def test_paper_attention_shapes_on_the_meta_device(paper_meta):
    info = paper_meta.meta["info"]
    t, h, w = info["token_grid"]
    assert (t, h, w) == (6, 16, 16) and info["video_tokens"] == 1536 and info["frames"] == 11
    assert 1.7e9 < info["parameters"]["transformer"] < 1.95e9  # the paper's ~1.8B MaskGIT
    heads_cvivit, heads_tf, batch = 8, 32, info["batch"]
    att = paper_meta.ops[paper_meta.ops["family"] == "Attention"]
    assert (att["flops"] > 0).all()

    temporal = att[att["attention_kind"] == "temporal-self"]
    assert set(temporal["part"]) == {"cvivit"} and set(temporal["module_type"]) == {"TemporalAttention"}
    assert set(temporal["seq_q"]) == {t} and set(temporal["seq_kv"]) == {t}
    assert set(temporal["batch_heads"]) == {batch * h * w * heads_cvivit}

    spatial = att[att["attention_kind"] == "spatial-self"]
    assert set(spatial["seq_q"]) == {h * w} and set(spatial["batch_heads"]) == {batch * t * heads_cvivit}

    tf = att[att["part"] == "transformer"]
    self_ = tf[tf["attention_kind"] == "self"]
    assert set(self_["seq_q"]) == {t * h * w} and set(self_["seq_kv"]) == {t * h * w}
    assert set(self_["batch_heads"]) == {2 * batch * heads_tf}  # classifier-free guidance doubles the batch
    cross = tf[tf["attention_kind"] == "cross"]
    assert set(cross["seq_q"]) == {t * h * w} and set(cross["seq_kv"]) == {info["text_len"]}


def test_cvivit_decoder_is_causal_in_time():
    built = genprof.build(RunSpec("phenaki", size="tiny"))
    cvivit = built.parts["cvivit"]
    t, h, w = built.info["token_grid"]
    k = built.info["codebook_size"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, k, (2, t, h, w), generator=g)
    with torch.inference_mode():
        ref = cvivit.decode(ids)
        for step in range(1, t):
            changed = ids.clone()
            changed[:, step] = (changed[:, step] + 1 + torch.randint(0, k - 1, (2, h, w), generator=g)) % k
            out = cvivit.decode(changed)
            first_changed_frame = 1 + 2 * (step - 1)  # frame 0 alone, then tubelets of 2 frames
            torch.testing.assert_close(out[:, :, :first_changed_frame], ref[:, :, :first_changed_frame],
                                       rtol=0, atol=1e-6)
            assert not torch.allclose(out[:, :, first_changed_frame:], ref[:, :, first_changed_frame:])
        # and time does mix: changing the first step changes every frame
        changed = ids.clone()
        changed[:, 0] = (changed[:, 0] + 1) % k
        out = cvivit.decode(changed)
        for f in range(out.shape[2]):
            assert not torch.allclose(out[:, :, f], ref[:, :, f]), f


def test_weights_round_trip_through_safetensors_files(tmp_path):
    built, ref = _infer(RunSpec("phenaki", size="tiny", seed=3))
    save_weights(built.parts, tmp_path / "w3")  # one file per part: the state_dict (tied T5 embeddings as copies)
    _, out = _infer(RunSpec("phenaki", size="tiny", seed=3, weights=str(tmp_path / "w3")))
    assert torch.equal(out, ref)

    # weights of another seed replace the seed's random ones
    other, _ = _infer(RunSpec("phenaki", size="tiny", seed=4))
    save_weights(other.parts, tmp_path / "w4")
    loaded, out4 = _infer(RunSpec("phenaki", size="tiny", seed=3, weights=str(tmp_path / "w4")))
    for name in PART_NAMES:
        a, b = loaded.parts[name].state_dict(), other.parts[name].state_dict()
        assert all(torch.equal(a[key], b[key]) for key in b), name
    assert not torch.equal(out4, ref)

    (tmp_path / "w4" / "cvivit.safetensors").unlink()
    with pytest.raises(GenprofError, match="cvivit.safetensors"):
        genprof.build(RunSpec("phenaki", size="tiny", seed=5, weights=str(tmp_path / "w4")))


def test_decoded_video_shape_and_tokenize_path():
    built, video = _infer(RunSpec("phenaki", size="tiny", batch=2))
    assert tuple(video.shape) == (2, 3, 5, 32, 32) == tuple(built.info["output_shape"])
    assert torch.isfinite(video).all()
    with torch.inference_mode():
        ids = built.parts["cvivit"].tokenize(video)
    assert tuple(ids.shape) == (2, *built.info["token_grid"])
    assert 0 <= int(ids.min()) and int(ids.max()) < built.info["codebook_size"]


def test_cosine_schedule_reveals_tokens_every_step_and_ends_unmasked():
    for steps, n in ((12, 1536), (3, 48), (1, 48), (40, 16)):
        s = mask_schedule(steps, n)
        assert len(s) == steps and s[-1] == 0
        assert all(b < a for a, b in zip([n] + s, s) if a > 0)


def test_tokens_are_refused():
    with pytest.raises(GenprofError, match="--steps"):
        genprof.build(RunSpec("phenaki", size="tiny", tokens=4))
