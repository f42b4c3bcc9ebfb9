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
import importlib
import importlib.machinery
import operator
import os
import sys
import threading
import types
import warnings
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

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
    """The call on meta tensors, without the lazy imports torch's Python meta kernels would trigger
    (`_standins`). A call that asked a stand-in for anything it does not answer (its `touched` list is
    not empty) runs again, on new arguments, whatever it returned or raised, with the real module in
    place of each stand-in asked; any other failure is the op's own refusal."""
    skip: set[str] = set()
    while True:
        pos, kw, named, tensors = _arguments(schema, shapes, dtypes, values, strides, list_dtype, numbers)
        touched: list[tuple[str, str]] = []
        try:
            with torch.no_grad(), _standins(touched, skip), _quiet():
                out = _call(overload, schema.name, pos, kw)
        except Exception:  # noqa: BLE001 - re-raised unless a stand-in was in the way
            if not touched:
                raise
        else:
            if not touched:
                break
        for module, _ in touched:  # again, with the real module of each one asked (and of what it imports)
            skip |= {module, *_NEEDS.get(module, ())}
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


def _arguments(schema: Any, shapes: tuple, dtypes: tuple, values: list, strides: tuple, list_dtype: str,
               numbers: dict[int, Any]) -> tuple[list, dict, dict, list[tuple[str, torch.Tensor, str]]]:
    """The call's positional and keyword arguments (new meta tensors), its recorded values by argument
    name, and its tensors as (argument name, tensor, role)."""
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
    return pos, kw, named, tensors


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


_STUB_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """No warning of the replayed call on the terminal: torch prints TORCH_WARN straight to the process's
    stderr, and a replay repeats the warnings the recorded program saw when it ran (an `out=` tensor
    resized, `pin_memory`'s deprecated device argument); Python warnings are ignored (and so not marked
    as shown). Only with one Python thread, since file descriptor 2 is the process's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if threading.active_count() > 1:
            yield
            return
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no stderr to speak of
            yield
            return
        try:
            null = os.open(os.devnull, os.O_WRONLY)
        except OSError:
            os.close(saved)
            yield
            return
        try:
            os.dup2(null, 2)
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


_SHAPES = "torch.fx.experimental.symbolic_shapes"
_COMPILE_FILE = os.path.join("torch", "_compile.py")
# What the real module imports of the others: a real import must not find their stand-ins.
_NEEDS = {"torch._dynamo": (_SHAPES, "sympy"), _SHAPES: ("sympy",)}
_STANDS_IN = ("torch._dynamo", _SHAPES, "sympy")  # the modules `_standins` may answer for


def _concrete(kinds: tuple[type, ...], touched: list[tuple[str, str]], fn: str, result: Any = None) -> Any:
    """A stand-in for a symbolic_shapes function of one value: for a plain value of one of `kinds`, the
    value itself (or `result`), as the real function returns; anything else is noted in `touched`."""
    def answer(a: Any, *_: Any, **__: Any) -> Any:
        if type(a) not in kinds:
            touched.append((_SHAPES, f"{fn}({type(a).__name__})"))
            raise TypeError(f"genprof's stand-in for {fn} takes plain values")
        return a if result is None else result
    return answer


def _stand_in_attrs(touched: list[tuple[str, str]], marked: list[Any]) -> dict[str, dict[str, Any]]:
    """What each stand-in module answers. torch._dynamo: `disable`, which torch's Python decompositions
    call once to mark themselves as not traceable. sympy: `Basic`, asked by the dtype promotion of
    elementwise decompositions for isinstance checks (no sympy value exists without sympy).
    torch.fx.experimental.symbolic_shapes: the guards `torch._check` and the meta kernels call, for
    plain bools and ints (what the real functions return for those; a SymBool or SymInt is noted)."""
    def disable(fn: Any = None, recursive: bool = True, **_: Any) -> Any:
        caller = sys._getframe(1).f_code
        if fn is None or caller.co_name != "inner" or not caller.co_filename.endswith(_COMPILE_FILE):
            # anything but torch._disable_dynamo's first call (a decorator applied by a module imported
            # meanwhile would leave its function undecorated for good)
            touched.append(("torch._dynamo", "disable outside torch._disable_dynamo"))
            raise TypeError("genprof's stand-in for torch._dynamo.disable answers torch._disable_dynamo only")
        marked.append(fn)
        return fn

    def joined(name: str, op: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def answer(x: Any, *others: Any) -> Any:
            if not all(type(v) is bool for v in (x, *others)):
                touched.append((_SHAPES, f"{name}(non-bool)"))
                raise TypeError(f"genprof's stand-in for {name} takes plain bools")
            return functools.reduce(op, others, x)
        return answer

    def sym_eq(x: Any, y: Any) -> bool:
        if isinstance(x, (tuple, list)) and isinstance(y, (tuple, list)):
            return len(x) == len(y) and all(sym_eq(a, b) for a, b in zip(x, y))
        if type(x) is int and type(y) is int:
            return x == y
        touched.append((_SHAPES, "sym_eq(non-int)"))
        raise TypeError("genprof's stand-in for sym_eq takes plain ints and lists of them")

    def is_nested_int(s: Any) -> bool:
        if type(s) is int:
            return False
        touched.append((_SHAPES, "is_nested_int(non-int)"))
        raise TypeError("genprof's stand-in for is_nested_int takes plain ints")

    def no_subclass(cls: type, **_: Any) -> None:  # a class built on a stand-in could not be pointed back
        touched.append(("sympy", f"subclass {cls.__qualname__}"))
        raise TypeError("genprof's stand-in for sympy.Basic cannot be subclassed")

    guards = {name: _concrete((bool,), touched, name) for name in
              ("expect_true", "guard_bool", "guard_or_false", "guard_or_true", "statically_known_true",
               "guard_size_oblivious")}
    return {
        "torch._dynamo": {"disable": disable},
        "sympy": {"Basic": type("Basic", (), {"__module__": "genprof stand-in for sympy",
                                              "__init_subclass__": classmethod(no_subclass)})},
        _SHAPES: {
            **guards, "guard_int": _concrete((int,), touched, "guard_int"),
            "optimization_hint": _concrete((int,), touched, "optimization_hint"),
            "guarding_hint_or_throw": _concrete((bool, int), touched, "guarding_hint_or_throw"),
            "has_guarding_hint": _concrete((bool, int, float), touched, "has_guarding_hint", True),
            "sym_eq": sym_eq, "sym_and": joined("sym_and", operator.and_),
            "sym_or": joined("sym_or", operator.or_), "is_nested_int": is_nested_int},
    }


class _NotedFinder:
    """A meta-path finder that notes every import of a submodule of a stand-in (which then fails)."""

    def __init__(self, stubs: dict[str, types.ModuleType], touched: list[tuple[str, str]]) -> None:
        self.stubs, self.touched = stubs, touched

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        for s in self.stubs:
            if name.startswith(s + "."):
                self.touched.append((s, f"import {name}"))
        return None


@contextlib.contextmanager
def _standins(touched: list[tuple[str, str]], skip: set[str] | frozenset[str] = frozenset()
              ) -> Iterator[dict[str, types.ModuleType]]:
    """Run a meta kernel without the imports it would trigger: torch._dynamo (0.7 s), sympy and
    torch.fx.experimental.symbolic_shapes (0.3 s), once a process, none of which a replay on concrete
    shapes needs.

    torch's Python decompositions are wrapped in `torch._disable_dynamo`, which imports torch._dynamo on
    its first call only to mark the function as not traceable; `torch._check` imports symbolic_shapes
    (and so sympy) for `expect_true`, which returns a plain bool as it is; the dtype promotion of
    elementwise decompositions imports sympy only to ask whether an argument is a sympy expression.
    While such a module is not imported, a stand-in module answers its import with those names alone
    (`_stand_in_attrs`). Afterwards the stand-ins and every mark they left are removed, and any module
    first imported meanwhile that kept a stand-in (or one of its names) in a global is pointed at the
    real module, so a later real import (torch.compile, symbolic shapes) sees torch as before. Every
    other attribute asked of a stand-in, a symbolic value given to one of its functions, and an import
    of a submodule are appended to `touched` as (module, what) (and raise), so that the caller runs the
    op again with those modules in `skip` (no stand-in for them). Only in a process with one Python
    thread, since the stand-ins are visible process-wide; modules already imported are left as they
    are. Yields the stand-ins in place (name -> module)."""
    if all(name in sys.modules or name in skip for name in _STANDS_IN) or threading.active_count() > 1 \
            or not _STUB_LOCK.acquire(blocking=False):  # nothing to stand in for, or not safely
        yield {}
        return
    try:
        marked: list[Any] = []
        stubs: dict[str, types.ModuleType] = {}
        for name, attrs in _stand_in_attrs(touched, marked).items():
            if name in sys.modules or name in skip:
                continue
            stub = types.ModuleType(name, "stand-in while genprof replays an op on the meta device")
            stub.__dict__.update(attrs)
            stub.__getattr__ = functools.partial(_asked, touched, name)  # type: ignore[attr-defined]
            stub.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
            stub.__path__ = []  # type: ignore[attr-defined]  # so that a submodule's import reaches the finder
            stubs[name] = stub
        if not stubs:
            yield stubs
            return
        finder = _NotedFinder(stubs, touched)
        last = next(reversed(sys.modules))
        sys.modules.update(stubs)
        sys.meta_path.insert(0, finder)
        try:
            yield stubs
        finally:
            if finder in sys.meta_path:
                sys.meta_path.remove(finder)
            for name, stub in stubs.items():
                if sys.modules.get(name) is stub:
                    del sys.modules[name]
                parent, _, leaf = name.rpartition(".")
                owner = sys.modules.get(parent) if parent else None
                if owner is not None and owner.__dict__.get(leaf) is stub:
                    delattr(owner, leaf)
            for fn in marked:
                if getattr(fn, "__dict__", None) is not None and fn.__dict__.get("__dynamo_disable") is fn:
                    del fn.__dict__["__dynamo_disable"]
            _rebind(_imported_after(last), stubs)
    finally:
        _STUB_LOCK.release()


def _asked(touched: list[tuple[str, str]], module: str, attr: str) -> Any:
    touched.append((module, attr))
    raise AttributeError(f"genprof's stand-in for {module} has no {attr!r}")


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


def _rebind(modules: list[Any], stubs: dict[str, types.ModuleType]) -> None:
    """Point every module global of `modules` that holds a stand-in (or one of its names) at the real
    module (or name). Not reached: a stand-in kept in a class attribute, a closure or a default argument
    of a module first imported while replaying (none in torch 2.13's meta kernels)."""
    held: dict[int, tuple[str, str | None]] = {}
    for name, stub in stubs.items():
        held[id(stub)] = (name, None)
        held.update((id(v), (name, k)) for k, v in stub.__dict__.items() if not k.startswith("__"))
    for mod in modules:
        names = getattr(mod, "__dict__", {})
        for k, v in list(names.items()):
            found = held.get(id(v))
            if found is None or not (v is stubs[found[0]] or v is stubs[found[0]].__dict__.get(found[1])):
                continue
            real = importlib.import_module(found[0])  # rare: a module imported a stand-in while replaying
            names[k] = real if found[1] is None else getattr(real, found[1])


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
