"""The versioned schemas of a run directory's files, checked on every read.

`RunFile` is run.json (format `FORMAT_VERSION`): the fields readers rely on,
with their types; other fields are kept as they are (a newer genprof may add
some). A run.json with no `format_version` was written before the field
existed and is read with the same schema. One with a higher version than this
genprof reads is refused by name. `OpsTable` and `PhasesTable` are the columns
of ops.parquet and phases.parquet and their kinds (string, integer,
floating), checked against the parquet file's schema before its rows are read;
a column added after the first version (`kernel`) is optional and filled in
for older tables. Every check gives one line that names the field or column.
Not here: reading files (genprof.store), what a run means.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

FORMAT_VERSION = 1  # run.json
TABLE_VERSION = 1  # ops.parquet, phases.parquet (in the parquet metadata as `genprof.table`)


class SchemaError(ValueError):
    """A file that does not match its schema: one line naming the field or column."""


class NewerFormat(SchemaError):
    """A file written by a newer genprof, in a format this one does not read."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class Stats(_Model):
    median_s: float
    p10_s: float
    p90_s: float
    stdev_s: float
    min_s: Optional[float] = None
    max_s: Optional[float] = None
    n: int


class StepStats(_Model):
    steps_per_repeat: int
    step: Stats


class Memory(_Model):
    peak_rss_growth_bytes: Optional[float] = None
    peak_device_bytes: Optional[float] = None


class Summary(_Model):
    timer: str = ""
    mode: str = ""
    measured: bool = True  # False: a meta-device run, which counts and times nothing (no total)
    total: Optional[Stats] = None
    phases: dict[str, Stats] = {}
    steps: dict[str, StepStats] = {}
    memory: Memory = Memory()
    derived: dict[str, float] = {}
    family_share: dict[str, float] = {}
    family_time_s: dict[str, float] = {}
    flops_per_repeat: Optional[float] = None
    bytes_per_repeat: Optional[float] = None
    attention_kernels: dict[str, int] = {}
    unclassified_ops: list[str] = []
    quality: Optional[dict[str, Any]] = None
    profiler: dict[str, Any] = {}
    stability: Optional[dict[str, Any]] = None

    @field_validator("total", mode="before")
    @classmethod
    def _no_total(cls, v: Any) -> Any:
        return None if v == {} else v

    @model_validator(mode="after")
    def _measured_has_total(self) -> "Summary":
        if self.measured and self.total is None:
            raise ValueError("total is missing (a measured run has one)")
        return self


class Spec(_Model):
    """RunSpec.to_dict(); defaults are RunSpec's, for older runs that lack a field."""

    workload: str = Field(min_length=1)
    size: str = "tiny"
    batch: Optional[int] = 1  # None: an imported trace (genprof import), which says nothing of it
    steps: Optional[int] = None
    tokens: Optional[int] = None
    dtype: Optional[str] = "float32"
    device: str = "cpu"
    mode: str = "trace"
    repeats: int = 3
    warmup: int = 1
    seed: Optional[int] = 0
    weights: Optional[str] = None
    optimizations: list[str] = []
    record_trace: bool = False
    threads: Optional[int] = None
    params: dict[str, Any] = {}
    ci_target: Optional[float] = None
    budget_s: Optional[float] = None


class RunFile(_Model):
    format_version: int = Field(0, ge=0, le=FORMAT_VERSION)  # 0: written before the field existed
    run_id: str = Field(min_length=1, pattern=r"^[^/\\]+$")
    created: Optional[str] = None
    spec: Spec
    status: Literal["ok", "failed"]
    reason: str = ""
    traceback: str = ""
    note: str = ""
    build_s: Optional[float] = None
    environment: dict[str, Any] = {}
    workload: dict[str, Any] = {}
    info: dict[str, Any] = {}
    sweep: dict[str, Any] = {}
    summary: Optional[Summary] = None

    @model_validator(mode="after")
    def _ok_has_summary(self) -> "RunFile":
        if self.status == "ok" and self.summary is None:
            raise ValueError("summary is missing (a successful run has one)")
        return self


def check_run(data: Any) -> dict[str, Any]:
    """run.json's content, checked; with the spec's missing fields filled in. SchemaError: one line, the field."""
    if not isinstance(data, dict):
        raise SchemaError(f"expected an object at the top, got {_kind(data)}")
    version = data.get("format_version", 0)
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise NewerFormat(f"format_version {version} is newer than this genprof reads ({FORMAT_VERSION}); "
                          "upgrade genprof to read this run")
    try:
        run = RunFile.model_validate(data)
    except ValidationError as e:
        raise SchemaError(describe(e)) from None
    return {**data, "spec": run.spec.model_dump()}


# ---------------------------------------------------------------------------------------------- tables

STR, INT, NUM = Literal["string"], Literal["integer"], Literal["integer", "floating"]


class _Table(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class OpsTable(_Table):
    """ops.parquet: one row per (repeat, phase, step, module, op, input shapes); docs/op-table.md."""

    run_id: STR
    workload: STR
    size: STR
    optimizations: STR
    repeat: INT
    phase: STR
    step: INT
    part: STR
    module: STR
    module_type: STR
    op: STR
    kernel: Optional[STR] = None  # added after the first tables were written: "" for those (FILL)
    family: STR
    attention_kind: STR
    calls: INT
    self_time_s: NUM
    total_time_s: NUM
    device_time_s: NUM
    flops: NUM
    bytes: NUM
    input_shapes: STR
    seq_q: INT
    seq_kv: INT
    batch_heads: INT
    head_dim: INT


class PhasesTable(_Table):
    """phases.parquet: wall time of every phase and step of every repeat."""

    repeat: INT
    phase: STR
    step: INT
    time_s: NUM


TABLES: dict[str, type[_Table]] = {"ops.parquet": OpsTable, "phases.parquet": PhasesTable}
FILL = {"ops.parquet": {"kernel": ""}}  # optional columns of older tables, and their value


def arrow_kind(t: Any) -> str:
    import pyarrow as pa

    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or getattr(pa.types, "is_string_view", lambda _: False)(t):
        return "string"
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_floating(t):
        return "floating"
    if pa.types.is_boolean(t):
        return "bool"
    return str(t)


def check_table(name: str, schema: Any) -> None:
    """A parquet file's arrow schema against the table's; SchemaError naming the column."""
    meta = schema.metadata or {}
    tag = meta.get(b"genprof.table", b"").decode(errors="replace")
    if tag:
        _, _, version = tag.partition("/")
        if not version.isdigit() or int(version) > TABLE_VERSION:
            raise NewerFormat(f"column format {tag!r} is newer than this genprof reads ({TABLE_VERSION}); "
                              "upgrade genprof")
    model = TABLES.get(name)
    if model is None:
        return
    kinds = {f.name: arrow_kind(f.type) for f in schema}
    try:
        model.model_validate(kinds)
    except ValidationError as e:
        err = e.errors()[0]
        col = ".".join(str(x) for x in err["loc"])
        if err["type"] == "missing":
            raise SchemaError(f"column {col!r} is missing") from None
        want = str((err.get("ctx") or {}).get("expected", "")).replace("'", "")
        raise SchemaError(f"column {col!r} holds {err['input']} values, expected {want}") from None


def table_metadata(name: str) -> dict[bytes, bytes]:
    return {b"genprof.table": f"{name.split('.')[0]}/{TABLE_VERSION}".encode()}


# ---------------------------------------------------------------------------------------------- messages


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


_WANT = {"dict_type": "an object", "model_type": "an object", "model_attributes_type": "an object",
         "string_type": "a string", "int_type": "an integer", "float_type": "a number", "bool_type": "true or false",
         "list_type": "a list"}


def describe(e: ValidationError) -> str:
    """The first error of a validation, on one line: `summary.total: expected an object, got a list`."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err["loc"]) or "the top"
    typ, got = err["type"], err.get("input")
    if typ == "missing":
        return f"{loc} is missing"
    if typ in _WANT:
        return f"{loc}: expected {_WANT[typ]}, got {_kind(got)}"
    if typ == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{loc}: {err['msg'].lower()}" + (f", got {got!r}"[:80] if not isinstance(got, (dict, list)) else "")
