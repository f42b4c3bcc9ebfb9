"""What every prefill schedule over ragged prompts shares: options, requests, metrics, the toggle.

A schedule toggle (`padded`, `prepack`, `chunked-prefill`, `fixed-chunk`,
`sarathi`) sets the decoder engine's batch schedule to one over ragged
prompts from genprof.engine.prompts (option `prompts=chat|mmlu|longdoc|PATH`,
`n=` prompts, default the run's --batch; `seed=`), greedy decoding of the
run's --tokens tokens per prompt. Phases `prefill` and `decode`, every engine
step (forward) a step. It changes the engine's batch schedule and nothing
else, so an attention backend composes with it; two schedules do not.

Metrics (the last inference's, in `built.info["schedule"]`, hence run.json
"info"): genprof.engine.requests.Recorder's summary plus what each schedule
adds. Peak memory is the run's own (`summary.memory`).
Not here: the schedules (one file each), the engine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from genprof.engine import requests as R
from genprof.engine.batch import Generation
from genprof.engine.prompts import PRESETS as PROMPT_PRESETS
from genprof.errors import GenprofError
from genprof.optimizations.base import Optimization
from genprof.phases import Phases


class RaggedSchedule:
    """An engine schedule over ragged requests; subclasses implement `schedule` (prefill, then decode)."""

    name = ""

    def __init__(self, lens: list[int], out_len: int, seed: int, stats: dict[str, Any], **params: Any):
        self.lens, self.out_len, self.seed, self.stats, self.params = lens, out_len, seed, stats, params

    def schedule(self, engine: Any, reqs: list[R.Request], phases: Phases, rec: R.Recorder) -> dict[str, Any]:
        raise NotImplementedError

    def run(self, engine: Any, phases: Phases, force: torch.Tensor | None, collect: bool) -> Generation:
        if engine.policies:
            raise GenprofError(f"the {self.name} schedule runs no token policy "
                               f"({', '.join(p.name for p in engine.policies)})")
        if force is not None or collect:
            raise GenprofError(f"the {self.name} schedule is exact; it has no teacher-forced mode")
        reqs = R.make_requests(self.lens, self.out_len, engine.config.vocab_size, self.seed, engine.device)
        rec = R.Recorder(engine.device)
        extra = self.schedule(engine, reqs, phases, rec)
        summary = rec.summary(reqs, extra or {})
        self.stats.clear()
        self.stats.update(summary)
        tokens = torch.tensor([r.tokens for r in reqs], device=engine.device)
        logits = [torch.stack([r.first_logits for r in reqs])]
        for r in reqs:  # free the KV caches now, not at the next inference
            r.cache = None
        return Generation(tokens, logits, requests=reqs)


class RaggedToggle(Optimization):
    """Common options and the configuring of the engine; subclasses set `schedule_class` and `options`."""

    applies_to = ("llm",)
    changes = frozenset({"schedule"})
    base_options: dict[str, tuple[str, ...] | None] = {"prompts": None, "n": None, "seed": None}
    schedule_class: type[RaggedSchedule] = RaggedSchedule

    def _int(self, key: str, default: int | None, low: int = 1) -> int | None:
        v = self.option(key)
        if v is None:
            return default
        try:
            n = int(v)
        except ValueError:
            raise GenprofError(f"{self.name}:{key} must be an integer, got {v!r}") from None
        if n < low:
            raise GenprofError(f"{self.name}:{key} must be >= {low}, got {n}")
        return n

    def check(self, spec: Any, workload: Any) -> None:
        super().check(spec, workload)
        if spec.device == "meta":
            raise GenprofError(f"--opt {self.name} runs a real schedule; it cannot run on --device meta")
        for key in self.options:
            if key not in ("prompts", "mode"):
                self._int(key, None, low=0 if key == "seed" else 1)
        preset = self.option("prompts", default="mmlu")
        if preset not in PROMPT_PRESETS:
            R.read_lengths_file(preset)

    def params(self) -> dict[str, Any]:
        """The schedule's own parameters (chunk, bin, ...), from the options."""
        return {}

    def n_requests(self, info: dict[str, Any]) -> int:
        return self._int("n", info.get("batch", 1))

    def out_len(self, info: dict[str, Any]) -> int:
        return info.get("decode_tokens", 8) + 1  # the prefill's token plus --tokens decoded

    def apply(self, built: Any) -> Any:
        engine = built.engine
        if engine is None:
            raise GenprofError(f"--opt {self.name} needs a workload that runs on the decoder engine")
        preset = self.option("prompts", default="mmlu")
        info = dict(built.info)
        n, out_len = self.n_requests(info), self.out_len(info)
        lens = R.lengths(preset, n, self._int("seed", 0, low=0), engine.config.max_position_embeddings - out_len)
        stats: dict[str, Any] = {}
        schedule = self.schedule_class(lens, out_len, self._int("seed", 0, low=0), stats, **self.params())
        info.update({"schedule_name": self.name, "schedule": stats, "prompts": preset,
                     "prompt_distribution": R.describe(preset) if preset in PROMPT_PRESETS else "file",
                     "requests": n, "batch": n, "decode_tokens": out_len - 1, "prompt_tokens": sum(lens),
                     "prompt_len": max(lens)})
        return replace(built, engine=engine.configure(schedule=schedule), info=info)
