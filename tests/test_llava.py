"""llava (CLIP vision tower + projector + Llama decoder) and vision-language context sparsification
(`--opt vision-prune`, `--opt text-prune`): structure, paper-size counts on the meta device, exactness at
keep=1, fewer tokens per layer when pruning, and quality on the model trained on the visual retrieval task."""

from __future__ import annotations

import pytest
import torch

import genprof
from genprof.errors import GenprofError
from genprof.optimizations import quality
from genprof.phases import NullPhases
from genprof.spec import RunSpec
from genprof.workloads import visual_retrieval as vr
from genprof.workloads.llava import PRESETS, build_model

PHASES = {"vision", "prefill", "decode"}
PARTS = {"vision_tower", "projector", "language_model"}


def _spec(*opts: str, **kw) -> RunSpec:
    return genprof.make_spec("llava", optimizations=list(opts), **kw)


def _prefill_attention(ops):
    att = ops[(ops["family"] == "Attention") & (ops["phase"] == "prefill") & (ops["part"] == "language_model")]
    layer = att["module"].str.extract(r"layers\.(\d+)\.")[0].astype(int)
    return att.assign(layer=layer).groupby("layer")["seq_q"].max()


@pytest.fixture(scope="module")
def paper_meta(tmp_path_factory):
    out = tmp_path_factory.mktemp("llava")
    plain = genprof.run("llava", size="paper", device="meta", tokens=1, out=out)
    pruned = genprof.run("llava", size="paper", device="meta", tokens=1, out=out,
                         optimizations=["vision-prune:layer=2,keep=0.2"])
    assert plain.ok, plain.meta.get("traceback")
    assert pruned.ok, pruned.meta.get("traceback")
    return plain, pruned


def test_tiny_trace_run_has_every_phase_and_part(tmp_path):
    res = genprof.run("llava", size="tiny", mode="trace", tokens=3, repeats=1, warmup=0, out=tmp_path)
    assert res.ok, res.meta.get("traceback")
    assert set(res.meta["summary"]["phases"]) == PHASES
    ops = res.ops
    assert set(ops["part"]) >= PARTS
    assert set(ops.loc[ops["part"] == "vision_tower", "phase"]) == {"vision"}
    assert set(ops.loc[ops["part"] == "language_model", "phase"]) == {"prefill", "decode"}
    assert set(ops.loc[ops["phase"] == "decode", "step"]) - {-1} == {0, 1, 2}
    assert res.meta["summary"]["derived"]["ttft_s"] > 0


def test_paper_on_meta_has_576_image_tokens_and_7b_flops(paper_meta):
    plain, _ = paper_meta
    info = plain.meta["info"]
    assert info["image_tokens"] == 576 and info["image_px"] == 336 and info["patch_px"] == 14
    params = info["parameters"]
    assert 6.7e9 < params["language_model"] < 6.8e9  # Vicuna-7B (+ 64 extra vocabulary rows)
    assert 3.0e8 < params["vision_tower"] < 3.1e8  # CLIP ViT-L/14-336 vision tower
    assert params["projector"] == 1024 * 4096 + 4096 + 4096 * 4096 + 4096
    seq = _prefill_attention(plain.ops)
    assert set(seq) == {info["prompt_len"]} == {576 + 64}
    ops = plain.ops
    prefill = ops.loc[ops["phase"] == "prefill", "flops"].sum()
    # about 2 FLOPs per decoder weight per prompt token, plus attention
    assert 2 * 6.5e9 * 640 < prefill < 2 * 7.0e9 * 640 * 1.15
    vision = ops.loc[ops["phase"] == "vision", "flops"].sum()
    assert 0.3e12 < vision < 0.45e12  # CLIP-L at 577 tokens + projector


def test_vision_prune_keep_02_cuts_counted_prefill_flops_by_60_percent_at_paper_size(paper_meta):
    plain, pruned = paper_meta
    vp = pruned.meta["info"]["vision_prune"]
    assert vp["image_tokens_kept"] == 116  # ceil(0.2 x 576)
    seq = _prefill_attention(pruned.ops)
    assert seq[0] == seq[1] == 640 and set(seq[2:]) == {640 - 576 + 116}
    flops = {name: r.ops.loc[r.ops["phase"] == "prefill", "flops"].sum() for name, r in
             (("plain", plain), ("pruned", pruned))}
    cut = 1 - flops["pruned"] / flops["plain"]
    assert cut >= 0.60, cut
    assert cut == pytest.approx(1 - vp["decoder_prefill_flops_fraction"], abs=0.03)
    # and every decode step reads a smaller KV cache
    att = pruned.ops[(pruned.ops["family"] == "Attention") & (pruned.ops["phase"] == "decode")]
    assert att["seq_kv"].min() == 640 - 576 + 116 + 1


def _logits(built):
    with torch.inference_mode():
        gen = built.engine.run(collect=True)
    return gen.tokens, gen.logits


def _hf_model(seed):
    """The tiny LLaVA model a build with `seed` makes, built again independently (same seed, same config)."""
    torch.manual_seed(seed)
    return build_model(PRESETS["tiny"]).eval()


def test_keep_1_gives_the_logits_of_the_unpruned_model_at_prefill_and_every_decode_step():
    plain = genprof.build(_spec(tokens=6, seed=3))
    full = genprof.build(_spec("vision-prune:layer=2,keep=1.0", "text-prune:keep=1.0,layer=1", tokens=6, seed=3))
    assert [p.name for p in full.engine.policies] == ["text-prune", "vision-prune"]
    ref_tokens, ref = _logits(plain)
    tokens, out = _logits(full)
    assert len(out) == 7 and torch.equal(tokens, ref_tokens)
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # and the engine gives the logits of transformers' LlavaForConditionalGeneration
    model, inputs = _hf_model(3), plain.inputs["prompt"]
    n_img = plain.info["image_tokens"]
    ids = torch.cat([inputs.prefix, torch.full((1, n_img), model.config.image_token_index), inputs.suffix,
                     ref_tokens[:, :-1]], dim=1)
    with torch.inference_mode():
        hf = model(input_ids=ids, pixel_values=inputs.pixel_values).logits[0]
    start = plain.info["prompt_len"] - 1
    for j, step in enumerate(ref):
        torch.testing.assert_close(step[0], hf[start + j], rtol=1e-4, atol=1e-4)


def test_keep_02_drops_image_tokens_from_the_layer_on(tmp_path):
    res = genprof.run(_spec("vision-prune:layer=2,keep=0.2", "text-prune:keep=0.5", tokens=4, repeats=1,
                            warmup=0), out=tmp_path)
    assert res.ok, res.meta.get("traceback")
    info = res.meta["info"]
    n_img, prompt = info["image_tokens"], info["prompt_len"]
    kept = info["vision_prune"]["image_tokens_kept"]
    assert n_img == (32 // 8) ** 2 and kept == 4
    seq = _prefill_attention(res.ops)
    assert list(seq) == info["vision_prune"]["tokens_per_layer"] == [prompt, prompt] + [prompt - n_img + kept] * 2
    # text-prune: 4 tokens fed, keep 0.5 -> 2 generated KV entries stay in layers >= 2
    assert info["text_prune"]["kv_entries_per_layer"] == [prompt + 4] * 2 + [prompt - n_img + kept + 2] * 2
    q = res.meta["summary"]["quality"]
    assert 0 <= q["next_token_agreement"] <= 1 and q["first_token_kl"] >= 0


def test_norm_score_and_text_prune_on_their_own_run():
    built = genprof.build(_spec("vision-prune:layer=0,keep=0.5,score=norm", tokens=3))
    tokens, logits = _logits(built)
    assert tokens.shape == (1, 4) and all(torch.isfinite(x).all() for x in logits)
    built = genprof.build(_spec("text-prune:keep=0.3,recent=2", tokens=8))
    with torch.inference_mode():
        built.run(NullPhases())
    prompt = built.info["prompt_len"]
    # 8 tokens fed; from layer 2 on ceil(0.3 x 8) = 3 generated entries stay (the 2 newest among them)
    assert built.info["text_prune"]["kv_entries_per_layer"] == [prompt + 8] * 2 + [prompt + 3] * 2


# ---- the model trained on the visual retrieval task (genprof/assets/retrieval-llava)

EVAL = 256  # held-out samples (seed vr.EVAL_SEED; the training script trains on seeds 0, 1, 2, ...)


@pytest.fixture(scope="module")
def retrieval():
    spec = _spec(batch=EVAL, seed=vr.EVAL_SEED, tokens=1, params={"task": "retrieval"})
    return genprof.build(spec)


def test_trained_model_solves_the_task_and_keep_02_stays_close(retrieval):
    plain = quality.measure(retrieval, None)  # no policy: checks the measure itself, its teacher-forced
    # pass of the same model must agree exactly with its greedy reference run
    assert plain["accuracy_unpruned"] >= 0.85  # measured: 0.895 on these 256 samples, 0.860 on 1024
    assert plain["next_token_agreement"] == 1.0 and plain["first_token_kl"] < 1e-6
    spec = _spec("vision-prune:layer=2,keep=0.2", batch=EVAL, seed=vr.EVAL_SEED, tokens=1,
                 params={"task": "retrieval"})
    pruned = quality.measure(genprof.build(spec), None)
    print("keep 0.2:", pruned)
    # measured: accuracy 0.863 (-3.1 points), first-token agreement 0.938, KL 0.030
    assert pruned["accuracy"] >= pruned["accuracy_unpruned"] - 0.05
    assert pruned["first_token_agreement"] >= 0.90
    assert pruned["first_token_kl"] < 0.1


def test_task_batch_is_deterministic_and_answers_are_in_the_image():
    a, b = vr.make_batch(8, 5), vr.make_batch(8, 5)
    assert torch.equal(a.pixel_values, b.pixel_values) and torch.equal(a.answers, b.answers)
    assert a.input_ids().shape == (8, len(vr.PREFIX) + vr.GRID ** 2 + 2)
    assert ((a.answers >= vr.VALUE0) & (a.answers < vr.VALUE0 + vr.N_VALUES)).all()


def test_weights_load_through_weights_dir_and_reproduce_the_output(tmp_path):
    built = genprof.build(_spec(tokens=3, seed=5))
    with torch.inference_mode():
        ref = built.run(NullPhases())
    _hf_model(5).save_pretrained(tmp_path, safe_serialization=True)
    loaded = genprof.build(_spec(tokens=3, seed=5, weights=str(tmp_path)))
    with torch.inference_mode():
        assert torch.equal(loaded.run(NullPhases()), ref)
    with pytest.raises(GenprofError, match="does not exist"):
        genprof.build(_spec(weights=str(tmp_path / "missing")))


@pytest.mark.parametrize("opt, match", [
    ("vision-prune:keep=2", r"keep='2' is not valid; expected a fraction in \(0, 1\]"),
    ("vision-prune:keep=abc", "expected a fraction"),
    ("vision-prune:layer=9", "expected a decoder layer index from 0 to 3"),
    ("vision-prune:layer=0", "needs layer >= 1"),
    ("vision-prune:score=max", "score"),
    ("vision-prune:size=3", "option"),
    ("text-prune:recent=-1", "recent"),
])
def test_bad_options_are_refused_in_one_line(opt, match):
    with pytest.raises(GenprofError, match=match) as e:
        genprof.api.validate(_spec(opt))
    assert "\n" not in str(e.value)


def test_wrong_workload_and_bad_task_are_refused_in_one_line():
    with pytest.raises(GenprofError, match="applies to: llava"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["vision-prune:keep=0.2"]))
    with pytest.raises(GenprofError, match="applies to: llava"):
        genprof.api.validate(genprof.make_spec("llm", optimizations=["text-prune:keep=0.5"]))
    with pytest.raises(GenprofError, match="task"):
        genprof.api.validate(_spec(params={"task": "vqa"}))
    with pytest.raises(GenprofError, match="--tokens"):
        genprof.api.validate(_spec(steps=3))
    assert PRESETS["paper"]["text"]["num_hidden_layers"] == 32
