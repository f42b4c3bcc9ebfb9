"""Read a Chrome/Kineto trace file into an EventTable, as a stream.

A trace is one JSON object whose `traceEvents` array holds the events (or a
bare array of events), as `torch.profiler`'s `export_chrome_trace`, Kineto's
own writer or any other Kineto producer writes it, plain or gzipped. The array
is decoded one event object at a time and only columns are kept (8 bytes an
event per column, an interned id of names and argument shapes), so memory
stays proportional to the columns, not to the file. The other top-level keys
(`deviceProperties`, `distributedInfo`, `schemaVersion`, `traceName`, ...),
before or after the array, are kept as `EventTable.meta`.

Times are read exactly: Kineto writes microseconds with three decimals, which
a float cannot hold for absolute timestamps; they become integer nanoseconds.
What the events mean (ops, scopes, launches) is not decided here.
"""

from __future__ import annotations

import gzip
import json
import re
from array import array
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from genprof.errors import GenprofError
from genprof.profiler.events import DEVICE_KINDS, SKIP_CATEGORIES, EventTable, _Interner, gc_paused

_WS = re.compile(r"[\s,]*")
_KEY = re.compile(r'"traceEvents"\s*:\s*\[')
_BOUNDARY = re.compile(r"\}\s*,\s*\{")
_BLOCK = 8 << 20
_META_LIMIT = 64 << 20  # what follows the events array (metadata), and the longest event read


def _us_to_ns(text: str) -> int:
    """Kineto writes times in microseconds with 3 decimals: read them exactly, without float rounding."""
    whole, dot, frac = text.partition(".")
    if dot and len(frac) <= 3 and frac.isdigit() and whole.lstrip("-").isdigit():
        ns = int(whole) * 1000
        return ns + int(frac.ljust(3, "0")) * (-1 if whole.startswith("-") else 1)
    return round(float(text) * 1000)


def _ns(value: Any) -> int:
    """A trace time field in ns. JSON numbers with a fraction or exponent arrive as their text (read
    exactly); integers are whole microseconds."""
    if type(value) is int:
        return value * 1000
    if type(value) is str:
        return _us_to_ns(value)
    return round(float(value or 0) * 1000)


def _open_text(path: Path):
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "rt", encoding="utf-8", errors="replace")


def _event_chunks(path: Path, meta: dict[str, Any] | None = None) -> Iterator[list]:
    """Yield the objects of a trace's `traceEvents` array (or of a bare JSON array), a list at a time.

    The text is read in blocks; each block's complete events are decoded by one `json.loads`
    of the slice up to the last `}, {` boundary (a slice that does not parse was cut inside an
    object: it is decoded one object at a time instead). When the array ends, `meta` (if given)
    receives the file's other top-level keys."""
    dec = json.JSONDecoder(parse_float=str)
    with _open_text(path) as f:
        buf = f.read(_BLOCK)
        eof = len(buf) < _BLOCK
        prefix = None
        if buf.lstrip().startswith("["):
            pos = buf.index("[") + 1
        else:
            m = _KEY.search(buf)
            while m is None and not eof:  # the array may come after other keys
                more = f.read(_BLOCK)
                eof = len(more) < _BLOCK
                buf += more
                m = _KEY.search(buf)
            if m is None:
                raise GenprofError(f"{path}: not a Chrome/Kineto trace (no traceEvents array)")
            prefix, pos = buf[:m.start()], m.end()
        while True:
            if len(buf) - pos < _BLOCK // 2 and not eof:
                more = f.read(_BLOCK)
                eof = len(more) < _BLOCK
                buf = buf[pos:] + more
                pos = 0
            pos = _WS.match(buf, pos).end()
            if pos >= len(buf):
                raise GenprofError(f"{path}: trace ends inside the traceEvents array (truncated file?)")
            if buf[pos] == "]":
                if meta is not None and prefix is not None:
                    meta.update(_metadata(prefix, buf[pos + 1:] + f.read(_META_LIMIT)))
                return
            cut = _last_boundary(buf, pos)
            if cut is not None:
                try:
                    yield json.loads("[" + buf[pos:cut + 1] + "]", parse_float=str)
                    pos = cut + 1
                    continue
                except ValueError:
                    pass
            try:
                obj, pos = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if not eof and len(buf) - pos < _META_LIMIT:  # an event longer than what is read so far
                    more = f.read(_BLOCK)
                    eof = len(more) < _BLOCK
                    buf = buf[pos:] + more
                    pos = 0
                    continue
                raise GenprofError(f"{path}: not valid trace JSON near character {e.pos}: {e.msg}") from None
            yield [obj]


def _last_boundary(buf: str, pos: int) -> int | None:
    """Index of the last `}` after `pos` that is followed by `,` and `{` (the end of a complete event)."""
    k = len(buf)
    while True:
        k = buf.rfind("}", pos, k)
        if k < 0:
            return None
        if _BOUNDARY.match(buf, k):
            return k


def _metadata(before: str, after: str) -> dict[str, Any]:
    """The top-level keys around the events array (the array itself left out); {} if they do not parse."""
    try:
        out = json.loads(before + '"traceEvents": []' + after)
    except ValueError:
        return {}
    if not isinstance(out, dict):
        return {}
    out.pop("traceEvents", None)
    return out


def read(path: str | Path) -> EventTable:
    """The events of a Chrome/Kineto trace file (.json or .json.gz), parsed as a stream."""
    path = Path(path)
    if not path.is_file():
        raise GenprofError(f"trace file not found: {path}")
    ids: dict[str, int] = {}
    names: list[str] = []
    cats: list[str] = []
    tids: dict[tuple, int] = {}
    sigs, knames = _Interner(), _Interner()
    name_id, thread, start, dur, corr, sig = (array("q") for _ in range(6))  # 8 bytes an event each
    k_corr, k_ns, k_start, k_kind, k_dev, k_stream, k_name = (array("q") for _ in range(7))
    sig_args: list[tuple[list, list, list, list]] = []
    meta: dict[str, Any] = {}
    skip, device, none = SKIP_CATEGORIES, DEVICE_KINDS, {}
    add_name, add_thread, add_start, add_dur, add_corr, add_sig = (a.append for a in (name_id, thread, start, dur,
                                                                                      corr, sig))
    with gc_paused():
        for chunk in _event_chunks(path, meta):
            for e in chunk:  # the hot loop: one dict lookup per field, integers kept as they come
                if e.get("ph") != "X":
                    continue
                cat = e.get("cat", "")
                if cat in skip:
                    continue
                a = e.get("args") or none
                kind = device.get(cat)
                if kind is not None:
                    k_corr.append(int(a.get("correlation", 0) or 0))
                    k_ns.append(_ns(e.get("dur", 0)))
                    k_start.append(_ns(e.get("ts", 0)))
                    k_kind.append(kind)
                    k_dev.append(_int(a.get("device", e.get("pid"))))
                    k_stream.append(_int(a.get("stream", e.get("tid"))))
                    k_name.append(knames(e.get("name", "")))
                    continue
                name = e.get("name", "")
                i = ids.get(name)
                if i is None:
                    i = ids[name] = len(names)
                    names.append(name)
                    cats.append(cat)
                add_name(i)
                tk = (e.get("pid"), e.get("tid"))
                ti = tids.get(tk)
                if ti is None:
                    ti = tids[tk] = len(tids)
                add_thread(ti)
                v = e.get("ts", 0)
                add_start(v * 1000 if type(v) is int else _ns(v))
                v = e.get("dur", 0)
                add_dur(v * 1000 if type(v) is int else _ns(v))
                v = a.get("correlation", 0)
                add_corr(v if type(v) is int else int(v or 0))
                dims = a.get("Input Dims")
                if dims is None:
                    add_sig(-1)
                else:
                    types, conc = a.get("Input type", ()), a.get("Concrete Inputs", ())
                    strides = a.get("Input Strides", ())
                    key = repr((dims, types, conc, strides))
                    s = sigs.ids.get(key)
                    if s is None:
                        sig_args.append(_live_args(dims, list(types), list(conc), strides))
                        s = sigs(key)
                    add_sig(s)
    if not name_id:
        raise GenprofError(f"{path}: the trace holds no CPU events")
    sig_arr = np.frombuffer(sig, np.int64)

    def args(indices: Sequence[int]) -> list[tuple[list, list, list, list]]:
        return [([], [], [], []) if sig_arr[i] < 0 else sig_args[sig_arr[i]] for i in indices]

    col = lambda a: np.frombuffer(a, np.int64) if len(a) else np.zeros(0, np.int64)  # noqa: E731
    st = col(start)
    return EventTable(names, col(name_id).astype(np.int32), col(thread), st, st + col(dur), col(corr), args,
                      cats, kernel_corr=col(k_corr), kernel_ns=col(k_ns), kernel_start=col(k_start),
                      kernel_kind=col(k_kind), kernel_device=col(k_dev), kernel_stream=col(k_stream),
                      kernel_name_id=col(k_name), kernel_names=knames.values, meta=meta)


def _int(value: Any) -> int:
    """A device or stream id as an integer (ROCm traces write streams as hex strings, '0x0')."""
    if isinstance(value, int):
        return int(value)
    try:
        return int(str(value), 0)
    except ValueError:
        return -1


def _concrete(text: Any) -> Any:
    """A Kineto 'Concrete Inputs' string as the value the live profiler reports ('' -> None,
    '[2, 2]' -> [2, 2], '0.' -> 0.0, 'inf' -> inf, '[2., 2.]' -> [2.0, 2.0])."""
    if not isinstance(text, str):
        return text
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        items = [_concrete(t.strip()) for t in text[1:-1].split(",")] if text[1:-1].strip() else []
        if all(isinstance(v, (int, float)) for v in items):
            return items
    return text


def _live_args(dims: list, types: list, conc: list, strides: Any = None) -> tuple[list, list, list, list]:
    """Trace-file arguments in the live profiler's structured form (shapes, dtypes, values, strides): a tensor
    list's entry is the list of its tensors' shapes (strides), as the trace writes it."""
    strides = list(strides) if isinstance(strides, list) and len(strides) == len(dims) else [[] for _ in dims]
    return list(dims), list(types), [_concrete(c) for c in conc], strides
