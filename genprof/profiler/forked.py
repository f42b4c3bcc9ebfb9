"""Work shared with forked copies of this process, for the parts of an analysis that take seconds.

`processes(want)` says how many processes may share work here: one where a
fork is not safe (no `os.fork`, or other Python threads running, which a
forked child would find stopped in the middle of whatever they held), else up
to `want`, the CPUs this process may use and MAX_PROCESSES. `split(fn, parts)`
computes `fn(part)` for each part, the first here and the others in forked
children that see this process's memory as it was (nothing is sent to them)
and send back their results, pickled, through a pipe, with their peak memory
growth (`STATS`). A child that fails or dies is not trusted: its part is
computed here again, so a result is always what one process would have
computed.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import threading
import warnings
from typing import Any, Callable, Iterator, Sequence

from genprof.profiler.memory import peak_growth

MAX_PROCESSES = 4
# What forked children did in this process's life: how many, and their peak RSS growth summed (they run
# side by side: the sum bounds what they held at once).
STATS = {"children": 0, "peak_bytes": 0}


def processes(want: int, limit: bool = True) -> int:
    """How many processes may share work of `want` parts here (at least 1); `limit=False`: `want` itself
    wherever a fork is safe, whatever the CPUs."""
    if want <= 1 or not hasattr(os, "fork") or threading.active_count() > 1:
        return 1
    if not limit:
        return want
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return max(1, min(want, cpus, MAX_PROCESSES))


@contextlib.contextmanager
def fork_quietly() -> Iterator[None]:
    """Python >= 3.12 warns of a fork in a process with threads, even idle BLAS or OpenMP workers, which
    the children here never call into."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def split(fn: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
    """[fn(part) for part in parts]: parts[1:] in forked children, parts[0] here, at the same time."""
    if len(parts) <= 1 or processes(len(parts), limit=False) < len(parts):
        return [fn(p) for p in parts]
    children: list[tuple[int, int]] = []
    try:
        for part in parts[1:]:
            children.append(_fork(fn, part))
        results = [fn(parts[0])]
        for k, (pid, fd) in enumerate(children, start=1):
            results.append(_collect(pid, fd, lambda k=k: fn(parts[k])))
        children = []
    finally:
        for pid, fd in children:
            _kill(pid, fd)
    return results


def _fork(fn: Callable[[Any], Any], part: Any) -> tuple[int, int]:
    r, w = os.pipe()
    with fork_quietly():
        pid = os.fork()
    if pid:
        os.close(w)
        return pid, r
    status = 1
    try:  # the child: never returns
        os.close(r)
        growth = peak_growth()
        result = fn(part)
        data = pickle.dumps((result, growth()), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(w, "wb") as f:
            f.write(data)
        status = 0
    finally:
        os._exit(status)


def _collect(pid: int, fd: int, again: Callable[[], Any]) -> Any:
    """A child's result; computed here again if the child failed."""
    try:
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    finally:
        _, status = os.waitpid(pid, 0)
    if status == 0:
        with contextlib.suppress(Exception):
            result, grown = pickle.loads(data)
            STATS["children"] += 1
            STATS["peak_bytes"] += grown
            return result
    return again()


def _kill(pid: int, fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(OSError):
        os.kill(pid, 9)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)
