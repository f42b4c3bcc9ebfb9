"""Work shared with forked copies of this process, for the parts of an analysis that take seconds.

`processes(want)` says how many processes may share work here: one where a
fork is not safe (no `os.fork`, or other Python threads running, which a
forked child would find stopped in the middle of whatever they held), else up
to `want`, the CPUs this process may use and MAX_PROCESSES. `split(fn, parts)`
computes `fn(part)` for each part, the first here and the others in forked
children that see this process's memory as it was (nothing is sent to them)
and send back their results, pickled, through a pipe, with their peak memory
growth (`STATS`). A child that cannot start, fails, dies or takes too long
(WAIT_S, or 4x this process's own part) is not trusted: its part is computed
here again, so a result is always what one process would have computed.
`start`, `finish` and `stop` are one such child, for work split otherwise.
Children run torch with one thread, as DataLoader workers do: the parent's
OpenMP pool does not survive a fork.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import select
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from genprof.profiler.events import gc_paused
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


WAIT_S = 30.0  # the least a child is waited for (else 4x this process's own part): then its part here


@dataclass
class Child:
    """A forked process computing one thing (`start`): its pid and the read end of its result's pipe."""

    pid: int
    fd: int


def start(fn: Callable[[], Any]) -> Child:
    """Fork a child that computes fn() and sends back (result, its peak RSS growth), pickled; OSError
    (nothing left open) where no process can be started."""
    r, w = os.pipe()
    try:
        with fork_quietly():
            pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        raise
    if pid:
        os.close(w)
        return Child(pid, r)
    status = 1
    try:  # the child: never returns
        os.close(r)
        torch.set_num_threads(1)  # an OpenMP pool of the parent's does not survive a fork (as in DataLoader workers)
        growth = peak_growth()
        result = fn()
        data = pickle.dumps((result, growth()), protocol=pickle.HIGHEST_PROTOCOL)
        with os.fdopen(w, "wb") as f:
            f.write(data)
        status = 0
    finally:
        os._exit(status)


def finish(child: Child, seconds: float) -> tuple[Any, int] | None:
    """The child's (result, peak RSS growth), or None where it failed or died; TimeoutError where it took
    longer than `seconds` (it is killed). The child is reaped either way."""
    try:
        data = read_all(child.fd, seconds)
    except TimeoutError:
        with contextlib.suppress(OSError):
            os.kill(child.pid, signal.SIGKILL)
        raise
    finally:
        os.close(child.fd)
        _, status = os.waitpid(child.pid, 0)
    if status != 0:
        return None
    try:
        with gc_paused():
            return pickle.loads(data)
    except Exception:  # noqa: BLE001 - a child that wrote half of it
        return None


def stop(child: Child) -> None:
    """Kill and reap a child whose result is not wanted."""
    with contextlib.suppress(OSError):
        os.close(child.fd)
    with contextlib.suppress(OSError):
        os.kill(child.pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(child.pid, 0)


def read_all(fd: int, seconds: float) -> bytes:
    """Everything written to `fd` until its writer closes it; TimeoutError after `seconds`."""
    end = time.monotonic() + seconds
    chunks = []
    while True:
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"nothing more within {seconds:.0f} s")
        data = os.read(fd, 1 << 20)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def split(fn: Callable[[Any], Any], parts: Sequence[Any]) -> list[Any]:
    """[fn(part) for part in parts]: parts[1:] in forked children, parts[0] here, at the same time. A part
    whose child cannot start, fails, dies or takes too long is computed here."""
    if len(parts) <= 1 or processes(len(parts), limit=False) < len(parts):
        return [fn(p) for p in parts]
    t0 = time.perf_counter()
    children: dict[int, Child] = {}
    try:
        for k in range(1, len(parts)):
            try:
                children[k] = start(functools.partial(fn, parts[k]))
            except OSError:  # no process to spare: this one computes it
                break
        results = [fn(parts[0])]
        wait = max(WAIT_S, 4 * (time.perf_counter() - t0))
        for k in range(1, len(parts)):
            child = children.pop(k, None)
            got = None
            if child is not None:
                with contextlib.suppress(TimeoutError):
                    got = finish(child, wait)
            if got is None:
                results.append(fn(parts[k]))
            else:
                results.append(got[0])
                STATS["children"] += 1
                STATS["peak_bytes"] += got[1]
    finally:
        for child in children.values():
            stop(child)
    return results
