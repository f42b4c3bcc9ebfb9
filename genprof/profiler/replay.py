"""An op's outputs, from its recorded inputs, by running it once on the meta device.

The profiler records each op's inputs (shapes, strides, dtypes, and the values
of scalar and list arguments), never its outputs. `replay()` rebuilds the call
from that record and runs it on the `meta` device, which computes output
shapes, dtypes and aliasing without memory or data:

- the overload of `torch.ops.<ns>.<name>` is the one whose schema matches the
  recorded kind of every argument (tensor, tensor list, scalar, list, absent);
- tensors are meta tensors with the recorded shape, stride and dtype;
  scalars and lists take their recorded values;
- each output is either written (a new tensor, or an input the schema marks
  as written: an in-place `self`, an `out=`) or an alias of an input that
  the op does not write (a view: `view`, `transpose`, `contiguous` of a
  contiguous tensor, `to` of the same dtype, `dropout` in eval mode, ...).

What a record lacks, and what is used instead (docs/op-table.md):
- string arguments are not recorded: the schema's default is used (`gelu`'s
  `approximate`, `pad`'s `mode`; output shapes do not depend on them), except
  where the string shapes the output (`SHAPING_STRINGS`: `einsum`'s equation,
  a convolution's `padding="same"`), which cannot be replayed;
- the dtype of a tensor list's elements is not recorded: the caller's
  `list_dtype` is used;
- `Tensor?[]` arguments (`index`'s indices) are recorded as nothing: no replay;
- a Python number passed for a Tensor argument is recorded as a 0-dim double
  (or int64, bool) tensor: it is passed as the number again, so the output
  keeps the other tensor's dtype (`_wrapped_numbers`). A real 0-dim tensor of
  those dtypes is recorded alike; where the two readings give different output
  dtypes (0-dim float * 0-dim double: float for a number, double for a
  tensor), the replay as tensors comes with it (`Replay.as_tensors`) for the
  caller to choose by what else the trace shows (`counting.py`: the casts);
- Device arguments are the meta device; Generators are None;
- ops with data-dependent outputs (`nonzero`, `item`) have no meta kernel: no replay.

SDPA is replayed through the meta function of the fused CPU kernel it
dispatches to on a CPU (same output; on the meta device SDPA itself takes its
math path, about 150 meta ops). Each distinct signature is replayed once
(cached). Nothing here counts bytes or FLOPs (`counting.py` does) or knows
about the profiler.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.machinery
import sys
import threading
import types
from dataclasses import dataclass, replace
from typing import Any, Iterator, Sequence

import torch

# The profiler's dtype names (c10's demangled C++ type names) -> torch dtypes.
DTYPES: dict[str, torch.dtype] = {
    "float": torch.float32, "double": torch.float64, "c10::Half": torch.float16, "c10::BFloat16": torch.bfloat16,
    "long int": torch.int64, "int": torch.int32, "short int": torch.int16, "signed char": torch.int8,
    "unsigned char": torch.uint8, "bool": torch.bool, "c10::complex<float>": torch.complex64,
    "c10::complex<double>": torch.complex128, "c10::complex<c10::Half>": torch.complex32,
    "c10::Float8_e4m3fn": torch.float8_e4m3fn, "c10::Float8_e5m2": torch.float8_e5m2,
    "c10::Float8_e4m3fnuz": torch.float8_e4m3fnuz, "c10::Float8_e5m2fnuz": torch.float8_e5m2fnuz,
    "short unsigned int": torch.uint16, "unsigned int": torch.uint32, "long unsigned int": torch.uint64,
}
SHAPING_STRINGS = frozenset({("einsum", "equation"), ("conv1d", "padding"), ("conv2d", "padding"),
                             ("conv3d", "padding"), ("_convolution_mode", "padding"), ("meshgrid", "indexing")})
_SCALAR_TYPES = ("int", "SymInt", "float", "bool", "complex", "Scalar", "number", "ScalarType", "Layout",
                 "MemoryFormat")


@dataclass(frozen=True)
class Tensor:
    """One tensor the op read or wrote: its shape, dtype name and size in bytes."""

    shape: tuple[int, ...]
    dtype: str
    nbytes: int


@dataclass(frozen=True)
class Replay:
    """What the meta run showed. `inputs`: every tensor argument, list elements included, as
    (argument name, Tensor, role): "read", "inplace" (read and written: an in-place `self`) or
    "out" (written only: an `out=` argument); `outputs`: every returned tensor with `written`
    False for an alias of an input the op does not write; `values`: argument name -> recorded value;
    `as_tensors`: where recorded 0-dim tensors were passed as Python numbers, the replay with them as
    tensors if its outputs have other dtypes (which of the two ran, the record alone does not say)."""

    overload: str
    inputs: tuple[tuple[str, Tensor, str], ...]
    outputs: tuple[tuple[Tensor, bool], ...]
    values: dict[str, Any]
    as_tensors: Replay | None = None  # the replay with no Python numbers, where its output dtypes differ


def dtype_name(dtype: torch.dtype) -> str:
    return _NAMES.get(dtype, str(dtype))


_NAMES = {v: k for k, v in DTYPES.items()}


def kind(dtype: str) -> str:
    """The kind of a recorded argument from its recorded type name."""
    if dtype in DTYPES:
        return "tensor"
    if dtype in ("TensorList", "ScalarList", "Scalar", "GenericList"):
        return dtype
    return "none"


def replay(op: str, shapes: Sequence[Any], dtypes: Sequence[str], args: Sequence[Any],
           strides: Sequence[Any] | None = None, list_dtype: str = "float") -> Replay | None:
    """The op's outputs on the meta device, or None when the record does not allow a replay."""
    try:
        key = (op, _freeze(shapes), tuple(dtypes), _freeze(args), _freeze(strides or []), list_dtype)
        hash(key)
    except TypeError:
        return None
    return _replay(*key)


def _freeze(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    return v


@functools.lru_cache(maxsize=20000)
def _replay(op: str, shapes: tuple, dtypes: tuple, args: tuple, strides: tuple, list_dtype: str) -> Replay | None:
    packet = _packet(op)
    if packet is None:
        return None
    n = len(shapes)
    kinds = [kind(dtypes[i]) if i < len(dtypes) else "none" for i in range(n)]
    values = [args[i] if i < len(args) else None for i in range(n)]
    numbers = _wrapped_numbers(shapes, kinds, dtypes)
    as_tensors = _first(packet, shapes, kinds, dtypes, values, strides, list_dtype, {})
    as_numbers = _first(packet, shapes, kinds, dtypes, values, strides, list_dtype, numbers) if numbers else None
    if as_numbers is None:  # no number, or the op refused it: 0-dim tensors
        return as_tensors
    if as_tensors is not None and _out_dtypes(as_tensors) != _out_dtypes(as_numbers):
        return replace(as_numbers, as_tensors=as_tensors)
    return as_numbers


def _first(packet: Any, shapes: tuple, kinds: list[str], dtypes: tuple, values: list, strides: tuple,
           list_dtype: str, numbers: dict[int, Any]) -> Replay | None:
    """The replay by the first overload that fits the record and runs (`numbers`: arguments passed as numbers)."""
    for name in packet.overloads():
        overload = getattr(packet, name)
        schema = overload._schema
        if len(schema.arguments) != len(shapes) or not all(
                _fits(a, k, v, i in numbers) for i, (a, k, v) in enumerate(zip(schema.arguments, kinds, values))):
            continue
        try:
            return _run(overload, schema, shapes, dtypes, values, strides, list_dtype, numbers)
        except Exception:  # noqa: BLE001 - any refusal of the meta kernel means "cannot replay"
            continue
    return None


def _out_dtypes(r: Replay) -> tuple[str, ...]:
    return tuple(t.dtype for t, _ in r.outputs)


_WRAPPED = {"double": 1.0, "long int": 1, "bool": True, "c10::complex<double>": 1j}


def _wrapped_numbers(shapes: tuple, kinds: list[str], dtypes: tuple) -> dict[int, Any]:
    """Arguments that were probably Python numbers: torch records a number passed for a Tensor
    argument as a 0-dim tensor of one of the `_WRAPPED` dtypes. Replaying it as a tensor can change
    the result's dtype (0-dim float tensor * 0-dim double tensor -> double; int tensor * 0-dim double
    tensor -> double), so it is passed as a number (to a Tensor argument, or to the overload that
    takes a Scalar there) when the op has another tensor to take its dtype from. A real 0-dim double
    or int64 tensor is recorded alike: `_replay` keeps the replay as tensors too where it differs."""
    found = {i: _WRAPPED[dtypes[i]] for i, k in enumerate(kinds)
             if k == "tensor" and shapes[i] == () and dtypes[i] in _WRAPPED}
    other = any(k == "TensorList" or (k == "tensor" and i not in found) for i, k in enumerate(kinds))
    return found if other else {}


@functools.lru_cache(maxsize=None)
def composite(op: str) -> bool:
    """Whether every overload of the op is made of other ops (CompositeImplicitAutograd: `einsum`,
    `conv2d`, `item`), so that the ops it called, which a trace records, are all it did."""
    packet = _packet(op)
    seen = []
    for o in packet.overloads() if packet is not None else []:
        try:
            seen.append(torch._C._dispatch_has_kernel_for_dispatch_key(
                op if o == "default" else f"{op}.{o}", "CompositeImplicitAutograd"))
        except RuntimeError:  # an overload the dispatcher does not hold (`einsum.sublist`: Python only)
            continue
    return bool(seen) and all(seen)


def _packet(op: str) -> Any:
    ns, sep, name = op.partition("::")
    if not sep or not ns.isidentifier() or not name.isidentifier():
        return None
    try:
        return getattr(getattr(torch.ops, ns), name)
    except (AttributeError, RuntimeError):
        return None


def _type_name(t: Any) -> tuple[bool, str]:
    """(optional, base type name) of a schema argument's JIT type: Optional[List[int]] -> (True, 'List[int]')."""
    optional = isinstance(t, torch._C.OptionalType)
    return optional, str(t.getElementType() if optional else t)


def _fits(arg: Any, k: str, value: Any, number: bool = False) -> bool:
    """Whether a recorded argument of kind k (and value; `number`: a Python number) can be this
    schema argument."""
    optional, t = _type_name(arg.type)
    if number:
        return t == "Tensor" or t in _SCALAR_TYPES
    if k == "none":  # not recorded: None, a string, a device, a generator (numbers and lists are recorded)
        return optional or t in ("str", "Device", "Generator")
    if t == "Tensor":
        return k == "tensor"
    if t.startswith("List[") and "Tensor" in t:
        return k in ("TensorList", "GenericList")
    if t.startswith("List["):
        return k == "ScalarList"
    if t in _SCALAR_TYPES:
        return k == "Scalar" and value is not None
    return False


def _meta(shape: Sequence[int], stride: Any, dtype: torch.dtype) -> torch.Tensor:
    shape = [int(s) for s in shape]
    if isinstance(stride, (list, tuple)) and len(stride) == len(shape) and all(isinstance(s, int) for s in stride):
        return torch.empty_strided(shape, stride, dtype=dtype, device="meta")
    return torch.empty(shape, dtype=dtype, device="meta")


def _run(overload: Any, schema: Any, shapes: tuple, dtypes: tuple, values: list, strides: tuple,
         list_dtype: str, numbers: dict[int, Any]) -> Replay:
    pos: list[Any] = []
    kw: dict[str, Any] = {}
    named: dict[str, Any] = {}
    tensors: list[tuple[str, torch.Tensor, str]] = []
    for i, arg in enumerate(schema.arguments):
        written = arg.alias_info is not None and arg.alias_info.is_write
        role = ("out" if arg.kwarg_only else "inplace") if written else "read"
        stride = strides[i] if i < len(strides) else None
        optional, t = _type_name(arg.type)
        if i in numbers:  # counted as the 0-dim tensor recorded, passed as the Python number it was
            tensors.append((arg.name, _meta((), None, DTYPES[dtypes[i]]), role))
            v = numbers[i]
        elif t == "Tensor" and dtypes[i] in DTYPES:
            v = _meta(shapes[i], stride, DTYPES[dtypes[i]])
            tensors.append((arg.name, v, role))
        elif t.startswith("List[") and "Tensor" in t:
            if not isinstance(shapes[i], tuple) or not all(isinstance(s, tuple) for s in shapes[i]) \
                    or dtypes[i] != "TensorList":
                raise ValueError("tensor list not recorded")
            dt = DTYPES[list_dtype]
            st = stride if isinstance(stride, tuple) and len(stride) == len(shapes[i]) else [None] * len(shapes[i])
            v = [_meta(s, ss, dt) for s, ss in zip(shapes[i], st)]
            tensors += [(arg.name, x, role) for x in v]
        elif t == "Device":  # never a real device: a factory op must not allocate
            v = torch.device("meta")
        elif values[i] is not None:
            v = list(values[i]) if isinstance(values[i], tuple) else values[i]
        elif t == "str" and (schema.name.partition("::")[2], arg.name) in SHAPING_STRINGS:
            raise ValueError(f"string argument {arg.name!r} shapes the output and is not recorded")
        elif arg.has_default_value():
            v = arg.default_value
        elif optional:
            v = None
        else:
            raise ValueError(f"argument {arg.name!r} not recorded")
        named[arg.name] = values[i] if values[i] is not None or isinstance(v, (torch.Tensor, list)) else v
        if arg.kwarg_only:
            kw[arg.name] = v
        else:
            pos.append(v)
    with torch.no_grad():
        out = _call_light(overload, schema.name, pos, kw)
    written_storage = {_storage(x) for _, x, role in tensors if role != "read"}
    inputs_storage = {_storage(x) for _, x, _ in tensors}
    outputs = []
    for o in _flatten(out):
        if o.device.type != "meta":
            raise ValueError("replay left the meta device")
        s = _storage(o)
        outputs.append((_describe(o), s in written_storage or s not in inputs_storage))
    inputs = tuple((name, _describe(x), role) for name, x, role in tensors)
    return Replay(str(overload), inputs, tuple(outputs), named)


def _sdpa_by_its_cpu_kernel(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                            enable_gqa=False):
    """SDPA's output through the meta function of the fused CPU kernel it dispatches to on a CPU:
    on the meta device SDPA itself takes the math path, about 150 meta ops (2 ms a call)."""
    if enable_gqa:
        raise ValueError("grouped-query attention: replay SDPA itself")
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale)[0]


# Ops replayed through a faster call with the same outputs (the original is the fallback).
_FASTER = {"aten::scaled_dot_product_attention": _sdpa_by_its_cpu_kernel}


def _call(overload: Any, name: str, pos: list, kw: dict) -> Any:
    fast = _FASTER.get(name) if str(overload).endswith(".default") else None
    if fast is not None:
        try:
            return fast(*pos, **kw)
        except Exception:  # noqa: BLE001 - a case the fused kernel refuses: the op itself decides
            pass
    return overload(*pos, **kw)


def _call_light(overload: Any, name: str, pos: list, kw: dict) -> Any:
    """`_call` without torch's lazy import of torch._dynamo. A call that asked the stand-in for anything
    but `disable` (its `touched` list is not empty) runs again with torch as it is, whatever it raised;
    any other failure is the op's own refusal."""
    touched: list[str] = []
    try:
        with _dynamo_not_imported(touched):
            return _call(overload, name, pos, kw)
    except Exception:  # noqa: BLE001 - re-raised unless the stand-in was in the way
        if not touched:
            raise
    return _call(overload, name, pos, kw)


_STUB_LOCK = threading.Lock()


@contextlib.contextmanager
def _dynamo_not_imported(touched: list[str]) -> Iterator[bool]:
    """Run a meta kernel without the import of torch._dynamo it would trigger (0.7 s, once a process).

    torch's Python decompositions (most backward ops' meta kernels) are wrapped in
    `torch._disable_dynamo`, which imports torch._dynamo on its first call only to mark the function
    as not traceable: nothing a meta replay needs. While torch._dynamo is not imported, a stand-in
    module answers that import with the function itself; afterwards the stand-in and every mark it
    left are removed, and any module first imported meanwhile that kept the stand-in in a global is
    pointed at the real torch._dynamo, so a later real import (torch.compile) sees torch as before.
    Every other attribute asked of the stand-in is appended to `touched` (and raises), so that the
    caller runs the op again without it. Only in a process with one Python thread, since the stand-in
    is visible process-wide; where torch._dynamo is already imported, nothing changes. Yields whether
    the stand-in is in place."""
    if "torch._dynamo" in sys.modules or threading.active_count() > 1 or not _STUB_LOCK.acquire(blocking=False):
        yield False
        return
    try:
        marked: list[Any] = []

        def disable(fn: Any = None, recursive: bool = True, **_: Any) -> Any:
            if fn is None:  # used as @disable(recursive=...)
                return functools.partial(disable, recursive=recursive)
            marked.append(fn)
            return fn

        def asked(attr: str) -> Any:
            touched.append(attr)
            raise AttributeError(f"genprof's stand-in for torch._dynamo has no {attr!r}")

        stub = types.ModuleType("torch._dynamo", "stand-in while genprof replays an op on the meta device")
        stub.disable = disable  # type: ignore[attr-defined]
        stub.__getattr__ = asked  # type: ignore[attr-defined]
        stub.__spec__ = importlib.machinery.ModuleSpec("torch._dynamo", None)
        last = next(reversed(sys.modules))
        sys.modules["torch._dynamo"] = stub
        try:
            yield True
        finally:
            if sys.modules.get("torch._dynamo") is stub:
                del sys.modules["torch._dynamo"]
            if torch.__dict__.get("_dynamo") is stub:
                delattr(torch, "_dynamo")
            for fn in marked:
                if getattr(fn, "__dict__", None) is not None and fn.__dict__.get("__dynamo_disable") is fn:
                    del fn.__dict__["__dynamo_disable"]
            _rebind(_imported_after(last), stub)
    finally:
        _STUB_LOCK.release()


def _imported_after(last: str) -> list[Any]:
    """The modules added to sys.modules after `last` (insertion order), or all of them if `last` is gone."""
    if last not in sys.modules:
        return list(sys.modules.values())
    new = []
    for name in reversed(sys.modules):
        if name == last:
            break
        new.append(sys.modules[name])
    return new


def _rebind(modules: list[Any], stub: types.ModuleType) -> None:
    """Point every module global of `modules` that holds the stand-in (or its `disable`) at the real
    torch._dynamo. Not reached: the stand-in kept in a class attribute, a closure or a default argument
    of a module first imported while replaying (none in torch 2.13's meta kernels)."""
    for mod in modules:
        names = getattr(mod, "__dict__", {})
        for k, v in list(names.items()):
            if v is stub or v is stub.disable:
                import torch._dynamo as real  # noqa: PLC0415 - rare: a module imported it while replaying

                names[k] = real if v is stub else real.disable


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _describe(t: torch.Tensor) -> Tensor:
    return Tensor(tuple(t.shape), dtype_name(t.dtype), t.numel() * t.element_size())


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    return []
