"""The workload contract: what an adapter for one model family provides.

A workload builds its model parts from a config (random weights, or real
weights from a local directory), makes inputs, and runs one inference as named
phases and steps. It marks phases through a `Phases` object that it is handed (genprof.phases);
it never imports the profiler, so the same code runs bare, timed or traced.
Not here: timing, tracing, counting (genprof.profiler), optimizations.
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, ContextManager

import torch

from genprof.errors import GenprofError, unknown_choice
from genprof.phases import NullPhases, Phases  # noqa: F401  (re-exported for workload modules)
from genprof.spec import RunSpec
from genprof.workloads import params
from genprof.workloads.params import Bound


@dataclass
class Built:
    """A workload ready to run: its model parts, and one inference.

    `parts` maps a part name (`unet`, `text_encoder`, `vae`, `model`) to its
    module; the profiler hooks every submodule of every part. `run(phases)`
    runs one whole inference and returns its output (latents, images, tokens):
    inside every context of `contexts` (made afresh per inference; an attention
    backend is one), it calls `infer(phases)`, or, for a workload whose decoder
    runs on the decoder engine (`engine`, genprof.engine.DecoderEngine),
    `infer(phases, engine)` (`engine.generate(phases)` when `infer` is None).
    Optimizations configure `engine` and `contexts`; they never replace `infer`.
    `info` carries what describes the run (parameters per part, shapes).
    `quality`, set by a lossy optimization, is called once after the
    measurement (outside every timed region, `measure_quality`) as
    `quality(built, output)` with the last measured output, and returns its
    quality against the unoptimized model; the run stores it as
    `summary.quality`. `inputs` holds what the inference consumes (an LLM's
    prompt token ids, a task's answers).
    """

    parts: dict[str, torch.nn.Module]
    infer: Callable[..., Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    quality: Callable[["Built", Any], dict[str, Any]] | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    engine: Any = None
    contexts: tuple[Callable[[], ContextManager[Any]], ...] = ()

    def run(self, phases: Phases) -> Any:
        with contextlib.ExitStack() as stack:
            for make in self.contexts:
                stack.enter_context(make())
            if self.engine is None:
                return self.infer(phases)
            return self.engine.generate(phases) if self.infer is None else self.infer(phases, self.engine)

    def measure_quality(self, output: Any) -> dict[str, Any] | None:
        if self.quality is None:
            return None
        with contextlib.ExitStack() as stack:
            for make in self.contexts:
                stack.enter_context(make())
            return self.quality(self, output)


def count_parameters(parts: dict[str, torch.nn.Module]) -> dict[str, int]:
    return {name: sum(p.numel() for p in m.parameters()) for name, m in parts.items()}


def make_parts(spec: RunSpec, build: Callable[[], dict[str, torch.nn.Module]],
               load: Callable[[str, torch.dtype], dict[str, torch.nn.Module]]) -> dict[str, torch.nn.Module]:
    """The model parts of a run: real weights from `spec.weights` (`load(dir, dtype)`), else a random
    build seeded by `spec.seed`; placed on the spec's device and dtype, in eval mode."""
    dtype = torch_dtype(spec.dtype)
    torch.manual_seed(spec.seed)
    parts = load(spec.weights, dtype) if spec.weights else build()
    for m in parts.values():
        m.to(device=torch.device(spec.device), dtype=dtype).eval()
    return parts


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


class Workload(abc.ABC):
    """One model family. Subclasses set the class attributes and implement `build`."""

    name: str = ""
    kind: str = ""  # "diffusion-tti", "transformer-tti", "ttv", "llm", ...
    stand_in: str = ""  # the open model whose architecture is built
    phases: tuple[str, ...] = ()
    presets: dict[str, dict[str, Any]] = {}
    # What --steps / --tokens count for this workload: one applies, the other is refused.
    counted_by: str = "steps"  # "steps" or "tokens"
    count_meaning: str = "denoising steps"
    # Limits the presets cannot tell (genprof.workloads.params): {"steps": SCHEDULER_STEPS, ...}
    bounds: ClassVar[dict[str, Bound]] = {}

    def max_count(self, p: dict[str, Any]) -> int | None:
        """The largest --steps/--tokens the preset allows (None: no limit)."""
        return None

    def decoder_layers(self, spec: RunSpec) -> int | None:
        """The number of decoder layers the spec's model will have, known before building it (None: no
        decoder engine); optimizations that act per layer validate their options against it."""
        return None

    def preset(self, size: str) -> dict[str, Any]:
        if size not in self.presets:
            raise unknown_choice(f"size for workload {self.name!r}", size, tuple(self.presets))
        return self.presets[size]

    def config(self, spec: RunSpec) -> dict[str, Any]:
        """The size preset with the spec's `--set key=value` overrides applied (top-level keys only)."""
        p = dict(self.preset(spec.size))
        for key, value in spec.params:
            if key not in p:
                raise unknown_choice(f"--set key for {self.name}", key, sorted(p))
            if isinstance(p[key], dict) and not isinstance(value, dict):
                raise GenprofError(f"--set {key} needs a JSON object (it is a group of settings): "
                                   f"--set '{key}={{...}}'")
            p[key] = {**p[key], **value} if isinstance(p[key], dict) else value
        return p

    def check(self, spec: RunSpec) -> None:
        """Refuse a spec this workload cannot run, with a clear message."""
        p = self.config(spec)
        params.check(self, spec)
        if spec.weights is not None:
            check_weights_dir(spec.weights)
        other = "tokens" if self.counted_by == "steps" else "steps"
        if getattr(spec, other) is not None:
            raise GenprofError(f"--{other} does not apply to {self.name}; "
                               f"use --{self.counted_by} for the number of {self.count_meaning}")
        n, limit = getattr(spec, self.counted_by), self.max_count(p)
        if n is not None and limit is not None and n > limit:
            raise GenprofError(f"--{self.counted_by} {n} is more than {self.name} at size {spec.size!r} has "
                               f"({self.count_meaning}); use at most {limit}")

    @abc.abstractmethod
    def build(self, spec: RunSpec) -> Built:
        """Build the parts (weights from `spec.weights` when given) and the inference."""

    @staticmethod
    def derived_metrics(phase_stats: dict[str, dict[str, float]], info: dict[str, Any]) -> dict[str, float]:
        """Workload-specific metrics from the phase statistics (time to first token, ...)."""
        return {}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "stand_in": self.stand_in,
                "phases": list(self.phases), "sizes": list(self.presets)}


def load_subfolders(path: str, dtype: torch.dtype, parts: dict[str, Any]) -> dict[str, torch.nn.Module]:
    """Model parts from the sub-folders of a save_pretrained directory (safetensors).

    `parts` maps a part name (= its sub-folder) to a transformers or diffusers
    class, or to (class, extra from_pretrained kwargs). transformers takes the
    dtype as `dtype=`, diffusers as `torch_dtype=`.
    """
    import os

    require_weights_dir(path, *parts)
    out = {}
    for name, entry in parts.items():
        cls, extra = entry if isinstance(entry, tuple) else (entry, {})
        key = "dtype" if cls.__module__.startswith("transformers") else "torch_dtype"
        out[name] = cls.from_pretrained(os.path.join(path, name), **{key: dtype}, **extra)
    return out


def clip_text_config(cfg: dict[str, Any]) -> Any:
    """A CLIP text encoder config: 77 positions and the CLIP tokenizer's special ids, then the preset's values."""
    from transformers import CLIPTextConfig

    return CLIPTextConfig(**{"max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 2, **cfg})


def autoencoder_kl(vae: dict[str, Any], latent: int, **extra: Any) -> torch.nn.Module:
    """The Stable Diffusion family's VAE (4 latent channels) for a latent of `latent`^2, from a preset's widths."""
    from diffusers import AutoencoderKL

    n = len(vae["block_out_channels"])
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, sample_size=latent * 2 ** (n - 1), **extra, **vae)


def vq_model(vq: dict[str, Any], grid: int, **extra: Any) -> torch.nn.Module:
    """A diffusers VQModel (RGB in and out) for a token grid of `grid`^2, from a preset's widths; it decodes
    token ids through its codebook."""
    from diffusers import VQModel

    n = len(vq["block_out_channels"])
    return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
                   up_block_types=("UpDecoderBlock2D",) * n, sample_size=grid * 2 ** (n - 1),
                   lookup_from_codebook=True, **extra, **vq)


def load_scheduler(cls: Any, weights: str | None, sub: str = "scheduler", **defaults: Any) -> Any:
    """A diffusers scheduler: from `weights/<sub>` when real weights come with one, else `cls(**defaults)`."""
    import os

    d = os.path.join(weights, sub) if weights else ""
    return cls.from_pretrained(d) if d and os.path.isdir(d) else cls(**defaults)


def check_weights_dir(path: str) -> None:
    """A --weights path must be a directory with something in it (each workload checks its own layout)."""
    import os

    if not os.path.exists(path):
        raise GenprofError(f"--weights {path}: the directory does not exist")
    if not os.path.isdir(path):
        raise GenprofError(f"--weights {path}: not a directory; give the folder of a save_pretrained checkpoint")
    if not os.listdir(path):
        raise GenprofError(f"--weights {path}: the directory is empty; give the folder of a save_pretrained checkpoint")


def require_weights_dir(path: str, *subdirs: str) -> None:
    """Fail with one clear line when a weights directory lacks what a workload needs."""
    import os

    if not os.path.isdir(path):
        raise GenprofError(f"weights directory {path!r} does not exist")
    missing = [s for s in subdirs if not os.path.exists(os.path.join(path, s))]
    if missing:
        raise GenprofError(f"weights directory {path!r} lacks {', '.join(missing)}; "
                           f"expected {', '.join(subdirs)} (save_pretrained layout, safetensors)")


def cache_kwarg(model: torch.nn.Module) -> str:
    """The name a transformers model's forward takes its KV cache by: 5.x `cache=`, 4.x `past_key_values=`."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def dynamic_cache(model: torch.nn.Module) -> Any:
    """An empty transformers DynamicCache for `model`."""
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # older transformers
        return DynamicCache()


def weights_config_value(weights: str | None, key: str, sub: str | None = None) -> int | None:
    """An integer from a weights directory's config.json (`sub`: a nested config, e.g. text_config), or None
    when there are no weights or no such file; the build reports a missing directory itself."""
    import json
    import os

    if not weights:
        return None
    path = os.path.join(weights, "config.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        cfg = json.load(f)
    cfg = cfg.get(sub, {}) if sub else cfg
    return int(cfg[key]) if key in cfg else None
