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

A trace of 32 MiB of text or more is read by two processes where two CPUs and
a safe fork allow (`processes_for`): this one decodes the events array from its
front while a forked helper, which has read the same text into the same slices,
decodes it from its back; they meet where neither has claimed a slice yet, and
the helper's columns are joined after these, every id renumbered as one pass
would have numbered it (`_read_from_both_ends`). The result is the one pass's,
column for column; where a slice does not parse alone (a `}, {` inside a string)
or the helper fails, the file is read again in one pass.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import gzip
import json
import marshal
import mmap
import os
import re
import select
import struct
import time
from array import array
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from genprof.errors import GenprofError
from genprof.profiler import forked
from genprof.profiler.events import DEVICE_KINDS, SKIP_CATEGORIES, EventTable, _Interner, gc_paused

_WS = re.compile(r"[\s,]*")
_KEY = re.compile(r'"traceEvents"\s*:\s*\[')
_BOUNDARY = re.compile(r"\}\s*,\s*\{")
_BLOCK = 8 << 20
_SLICE = 256 << 10  # the text decoded at once: small enough for helper processes to share the work evenly
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


def _gzipped(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _open_text(path: Path):
    if _gzipped(path):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, "rt", encoding="utf-8", errors="replace")


class _SplitFailed(Exception):
    """Reading with helper processes failed (a slice cut inside a string, a helper that died): the file is
    read again in one process."""


def _event_chunks(path: Path, info: dict[str, Any], decode: bool = True) -> Iterator[Any]:
    """Yield the objects of a trace's `traceEvents` array (or of a bare JSON array), a list at a time.

    The text is read in blocks; a slice of complete events (up to the last `}, {` boundary within
    _SLICE characters, or within the block) is decoded by one `json.loads` (a slice that does not
    parse was cut inside an object: it is decoded one object at a time instead). With
    `decode=False` the slices' text is yielded instead, each slice where a decoding pass would cut it
    (one object where no boundary follows): the same slices in every process that reads the file.
    `info` receives the text before the array (`prefix`) and after it (`after`): the file's other
    top-level keys."""
    dec = json.JSONDecoder(parse_float=str)
    with _open_text(path) as f:
        buf = f.read(_BLOCK)
        eof = len(buf) < _BLOCK
        info["prefix"] = None
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
            info["prefix"], pos = buf[:m.start()], m.end()
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
                info["after"] = buf[pos + 1:] + f.read(_META_LIMIT)
                return
            cut = _last_boundary(buf, pos, pos + _SLICE)
            if cut is None:
                cut = _last_boundary(buf, pos)
            if cut is not None:
                if not decode:
                    yield buf[pos:cut + 1]
                    pos = cut + 1
                    continue
                try:
                    yield json.loads("[" + buf[pos:cut + 1] + "]", parse_float=str)
                    pos = cut + 1
                    continue
                except ValueError:
                    pass
            try:
                obj, end = dec.raw_decode(buf, pos)
            except json.JSONDecodeError as e:
                if not eof and len(buf) - pos < _META_LIMIT:  # an event longer than what is read so far
                    more = f.read(_BLOCK)
                    eof = len(more) < _BLOCK
                    buf = buf[pos:] + more
                    pos = 0
                    continue
                raise GenprofError(f"{path}: not valid trace JSON near character {e.pos}: {e.msg}") from None
            yield [obj] if decode else buf[pos:end]
            pos = end


def _last_boundary(buf: str, pos: int, end: int | None = None) -> int | None:
    """Index of the last `}` in buf[pos:end] that is followed by `,` and `{` (the end of a complete event)."""
    k = len(buf) if end is None else min(end, len(buf))
    while True:
        k = buf.rfind("}", pos, k)
        if k < 0:
            return None
        if _BOUNDARY.match(buf, k):
            return k


def _metadata(before: str | None, after: str | None) -> dict[str, Any]:
    """The top-level keys around the events array (the array itself left out); {} if they do not parse."""
    if before is None or after is None:
        return {}
    try:
        out = json.loads(before + '"traceEvents": []' + after)
    except ValueError:
        return {}
    if not isinstance(out, dict):
        return {}
    out.pop("traceEvents", None)
    return out


def _renumbered(dst: array, src: array, values: list, known: dict, new: Callable[[int], None] | None = None) -> None:
    """Append the id column `src` (ids into `values`; -1: none) to `dst` as ids into `known`: the values
    it uses, in the order of their first use, are looked up there and added where new (`new(j)`)."""
    col = np.frombuffer(src, np.int64) if len(src) else np.zeros(0, np.int64)
    used, first = np.unique(col[col >= 0], return_index=True)
    ids = np.full(len(values), -1, np.int64)
    for j in used[np.argsort(first, kind="stable")].tolist():
        v = values[j]
        i = known.get(v)
        if i is None:
            i = known[v] = len(known)
            if new is not None:
                new(j)
        ids[j] = i
    dst.frombytes(np.where(col < 0, col, ids[np.maximum(col, 0)]).tobytes() if len(ids) else col.tobytes())


_PLAIN = ("start", "dur", "corr", "k_corr", "k_ns", "k_start", "k_kind", "k_dev", "k_stream")  # no ids in them
_IDS = ("name_id", "thread", "sig", "k_name")  # ids into the names, threads, signatures, kernel names


class _Columns:
    """The events of a trace (or of one part of it) as columns, 8 bytes an event each, with the names,
    threads, argument signatures and kernel names interned in order of first appearance."""

    def __init__(self, tables: _Columns | None = None) -> None:
        """Empty columns; with `tables`, numbering names, threads, signatures and kernel names in its tables
        (one process's runs of slices: each value interned and its arguments read once)."""
        if tables is None:
            self.ids: dict[str, int] = {}
            self.names: list[str] = []
            self.cats: list[str] = []
            self.tids: dict[tuple, int] = {}
            self.sigs, self.knames = _Interner(), _Interner()
            self.sig_args: list[tuple[list, list, list, list]] = []
        else:
            self.ids, self.names, self.cats, self.tids = tables.ids, tables.names, tables.cats, tables.tids
            self.sigs, self.knames, self.sig_args = tables.sigs, tables.knames, tables.sig_args
        self.name_id, self.thread, self.start, self.dur, self.corr, self.sig = (array("q") for _ in range(6))
        self.k_corr, self.k_ns, self.k_start, self.k_kind, self.k_dev, self.k_stream, self.k_name = (
            array("q") for _ in range(7))

    def add(self, chunks: Iterator[list], restate: bool = False) -> None:
        """Append the events of `chunks`. `restate`: the category of each name is the one of its first
        event here, whatever an earlier call recorded (parts added last first)."""
        ids, names, cats, tids, sigs, knames, sig_args = (self.ids, self.names, self.cats, self.tids, self.sigs,
                                                          self.knames, self.sig_args)
        k_corr, k_ns, k_start, k_kind, k_dev, k_stream, k_name = (self.k_corr, self.k_ns, self.k_start, self.k_kind,
                                                                  self.k_dev, self.k_stream, self.k_name)
        skip, device, none, restated = SKIP_CATEGORIES, DEVICE_KINDS, {}, set()
        add_name, add_thread, add_start, add_dur, add_corr, add_sig = (
            a.append for a in (self.name_id, self.thread, self.start, self.dur, self.corr, self.sig))
        with gc_paused():
            for chunk in chunks:
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
                    if restate and name not in restated:
                        restated.add(name)
                        cats[i] = cat
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
                        key = marshal.dumps((dims, types, conc, strides), 2)  # by value: no references
                        s = sigs.ids.get(key)
                        if s is None:
                            sig_args.append(_live_args(dims, list(types), list(conc), strides))
                            s = sigs(key)
                        add_sig(s)

    def extend(self, other: _Columns) -> None:
        """Append the events of the part after this one. Each name, thread, signature and kernel name the
        part's events use is numbered as one pass over both would have numbered it (first appearance),
        whatever else the part's tables hold (parts read by one process share their tables)."""
        def new_name(j: int) -> None:
            self.names.append(other.names[j])
            self.cats.append(other.cats[j])

        def new_sig(j: int) -> None:
            self.sigs.values.append(other.sigs.values[j])
            self.sig_args.append(other.sig_args[j])

        _renumbered(self.name_id, other.name_id, other.names, self.ids, new_name)
        _renumbered(self.thread, other.thread, list(other.tids), self.tids)
        _renumbered(self.sig, other.sig, other.sigs.values, self.sigs.ids, new_sig)
        _renumbered(self.k_name, other.k_name, other.knames.values, self.knames.ids,
                    lambda j: self.knames.values.append(other.knames.values[j]))
        for col in _PLAIN:
            getattr(self, col).extend(getattr(other, col))

    def append_shared(self, other: _Columns) -> None:
        """Append the events of the part after this one that numbers its values in the same tables."""
        for col in _PLAIN + _IDS:
            getattr(self, col).extend(getattr(other, col))

    def table(self, meta: dict[str, Any], reading: dict[str, Any]) -> EventTable:
        sig_arr = np.frombuffer(self.sig, np.int64) if len(self.sig) else np.zeros(0, np.int64)
        sig_args = self.sig_args

        def args(indices: Sequence[int]) -> list[tuple[list, list, list, list]]:
            return [([], [], [], []) if sig_arr[i] < 0 else sig_args[sig_arr[i]] for i in indices]

        col = lambda a: np.frombuffer(a, np.int64) if len(a) else np.zeros(0, np.int64)  # noqa: E731
        st = col(self.start)
        return EventTable(self.names, col(self.name_id).astype(np.int32), col(self.thread), st, st + col(self.dur),
                          col(self.corr), args, self.cats, kernel_corr=col(self.k_corr), kernel_ns=col(self.k_ns),
                          kernel_start=col(self.k_start), kernel_kind=col(self.k_kind),
                          kernel_device=col(self.k_dev), kernel_stream=col(self.k_stream),
                          kernel_name_id=col(self.k_name), kernel_names=self.knames.values, meta=meta,
                          reading=reading)


PARALLEL_MIN_CHARS = 32 << 20  # the text worth a helper process (its fork, its copy of the text, the join)


def processes_for(path: Path, processes: int | None = None) -> int:
    """How many processes read `path` (1 or 2): `processes` if given, else 2 from 32 MiB of text, where
    `forked.processes` allows (two CPUs, a fork that is safe)."""
    if processes is None:
        return forked.processes(2 if _text_size(path) >= PARALLEL_MIN_CHARS else 1)
    return forked.processes(min(int(processes), 2), limit=False)


def _text_size(path: Path) -> int:
    """The length of the trace's text: the file's size, or for gzip the size its trailer records (modulo
    4 GiB, the last member's only: it only decides how many processes read it)."""
    size = path.stat().st_size
    if size < 18 or not _gzipped(path):
        return size
    with open(path, "rb") as f:
        f.seek(-4, 2)
        return max(int.from_bytes(f.read(4), "little"), size)


def read(path: str | Path, processes: int | None = None) -> EventTable:
    """The events of a Chrome/Kineto trace file (.json or .json.gz), parsed as a stream; a large one by
    two processes from both ends of its events array (`processes_for`, `_read_from_both_ends`)."""
    path = Path(path)
    if not path.is_file():
        raise GenprofError(f"trace file not found: {path}")
    cols, info, reading = None, {}, {"processes": 1, "helper_peak_bytes": 0}
    if processes_for(path, processes) > 1:
        try:
            cols, info, reading = _read_from_both_ends(path)
        except _SplitFailed as e:
            cols, info, reading["fallback"] = None, {}, str(e)
    if cols is None:
        cols = _Columns()
        cols.add(_event_chunks(path, info))
    if not cols.name_id:
        raise GenprofError(f"{path}: the trace holds no CPU events")
    return cols.table(_metadata(info.get("prefix"), info.get("after")), reading)


class _Claims:
    """Which process decodes which slice: this one takes slices from the front, a helper from the back,
    each claiming a slice under a lock (a one-byte token in a pipe) only while the other has not
    reached it, so that every slice is decoded once."""

    def __init__(self) -> None:
        self.mem = mmap.mmap(-1, 16)  # shared with a forked helper: (next front slice, lowest back slice)
        self.mem[:] = struct.pack("<qq", 0, 1 << 62)
        self.r, self.w = os.pipe()
        os.write(self.w, b"t")

    def _take(self, front: bool, index: int) -> bool:
        if not select.select([self.r], [], [], HELPER_WAIT_S)[0]:  # the other side died holding it
            raise _SplitFailed("the claims lock was not released")
        os.read(self.r, 1)
        try:
            f, b = struct.unpack("<qq", self.mem[:])
            if front and index < b:
                self.mem[:8] = struct.pack("<q", index + 1)
                return True
            if not front and index >= f:
                self.mem[8:] = struct.pack("<q", index)
                return True
            return False
        finally:
            os.write(self.w, b"t")

    def front(self, index: int) -> bool:
        return self._take(True, index)

    def back(self, index: int) -> bool:
        return self._take(False, index)

    def close(self) -> None:
        for fd in (self.r, self.w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.mem.close()


HELPER_WAIT_S = 30.0  # the least a helper is waited for (else 4x this side's time): then one pass instead


def _read_from_both_ends(path: Path) -> tuple[_Columns, dict[str, Any], dict[str, Any]]:
    """Decode the events array from its front here while a forked helper decodes it from its back.

    The helper reads the whole text into the same slices as this process (`_event_chunks` with
    `decode=False`), keeps the last ones (at most HELPER_TEXT characters, and 2/3 of the text) and
    decodes them from the last one down; the two meet where `_Claims` says, and this process stops
    reading there (where it reads every slice itself, the helper is stopped and not waited for). The
    helper's columns (one run, in file order) are joined after this process's. _SplitFailed where a
    slice does not parse alone, the helper fails or takes too long, the two disagree on the slice where
    they met (the file changed meanwhile), or no helper can be started: the caller reads the file
    again in one pass."""
    t0 = time.perf_counter()
    try:
        claims = _Claims()
    except OSError as e:
        raise _SplitFailed(f"no claims lock: {e}") from None
    try:
        helper = forked.start(lambda: _helper(path, claims))
    except OSError as e:
        claims.close()
        raise _SplitFailed(f"no reading helper: {e}") from None
    stop = None
    done = None
    try:
        info: dict[str, Any] = {}
        cols = _Columns()
        slices = 0
        with gc_paused():
            for i, text in enumerate(_event_chunks(path, info, decode=False)):
                if not claims.front(i):
                    stop = (i, len(text), text[:64])
                    break
                try:
                    chunk = json.loads("[" + text + "]", parse_float=str)
                except ValueError:
                    raise _SplitFailed(f"slice {i} does not parse alone") from None
                cols.add((chunk,))
                slices += 1
        if stop is not None:
            wait = max(HELPER_WAIT_S, 4 * (time.perf_counter() - t0))
            try:
                done = forked.finish(helper, wait)
            except TimeoutError:
                raise _SplitFailed(f"the reading helper did not finish within {wait:.0f} s") from None
            finally:
                helper = None
    finally:
        if helper is not None:  # this side failed or read it all: the helper's work is not wanted
            forked.stop(helper)
        claims.close()
    reading = {"processes": 2, "helper_peak_bytes": 0, "slices": slices, "helper_slices": 0}
    if stop is None:  # every slice read here
        return cols, info, reading
    if done is None:
        raise _SplitFailed("the reading helper ended without its columns")
    payload, peak = done
    if isinstance(payload, str):
        raise _SplitFailed(payload)
    back, after, helper_slices, met = payload
    if met != stop:
        raise _SplitFailed("the two readers disagree on the slice where they met (the file changed?)")
    if "after" not in info:
        info["after"] = after
    joined = _Columns()
    joined.extend(cols)
    joined.extend(back)
    return joined, info, {**reading, "helper_peak_bytes": peak, "slices": slices + helper_slices,
                          "helper_slices": helper_slices}


HELPER_TEXT = 512 << 20  # the most text the helper keeps (and at most 2/3 of the trace's): its last slices


def _helper(path: Path, claims: _Claims) -> Any:
    """The back's part, in a forked process: (its columns in file order, the text after the array, its
    number of slices, (index, length, head) of the slice where it met the front), or why it failed."""
    gc.disable()  # a short life of many small containers and no cycles (`gc_paused`)
    try:
        info: dict[str, Any] = {}
        kept: collections.deque[str] = collections.deque()
        size = first = 0
        most = min(HELPER_TEXT, 2 * _text_size(path) // 3)
        for text in _event_chunks(path, info, decode=False):
            kept.append(text)
            size += len(text)
            while size > most and len(kept) > 1:
                size -= len(kept.popleft())
                first += 1
        tables = _Columns()
        parts: list[_Columns] = []
        index = first + len(kept) - 1
        met = None
        while kept and claims.back(index):
            part = _Columns(tables)
            text = kept.pop()
            met = (index, len(text), text[:64])
            try:  # slices come last first: a name's category is the one of its first event in file order
                part.add((json.loads("[" + text + "]", parse_float=str),), restate=True)
            except ValueError:
                return f"slice {index} does not parse alone"
            parts.append(part)
            index -= 1
        run = _Columns(tables)
        for part in reversed(parts):
            run.append_shared(part)
        return run, info.get("after"), len(parts), met
    except Exception as e:  # noqa: BLE001 - reported to the parent, which reads the file in one pass
        return f"the reading helper failed: {type(e).__name__}: {e}"


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
