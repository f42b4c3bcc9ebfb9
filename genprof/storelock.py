"""Who owns a run store: one sweep at a time, and which temporary folders are dead.

The lock. A sweep holds `OUT/.genprof-lock` while it runs: an exclusive
`flock` on the file (the kernel drops it when the process dies, however it
dies) plus the holder's host, PID, process start time and a heartbeat (the
file's mtime, touched every `HEARTBEAT_S`) written in it. Another sweep on the
same store is refused with the holder named. A lock whose holder is gone is
recovered: on the same host when that PID is not running, or runs a process
started at another time (the PID was reused); from another host (where flock
may not reach, as on some network file systems) when its heartbeat is older
than `STALE_S`. The file is never deleted (a deleted lock file could be locked
by two processes at once); released, it is emptied.

Temporary folders. A run is assembled in `.tmp-RUN@HOST@PID`
(genprof.store.tmp_name). One of this host whose process is gone is removed; one
of another host only when it has not changed for `STALE_TMP_S`, since its
process cannot be seen from here. Older names without a host are treated as of
another host. Not here: what runs in the store (genprof.sweep).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from genprof.errors import GenprofError
from genprof.store import HOST, TMP_PREFIX, tmp_owner

LOCK_NAME = ".genprof-lock"
HEARTBEAT_S = 15.0
STALE_S = 120.0  # a lock of another host untouched this long is stale
STALE_TMP_S = 2 * 24 * 3600.0  # a temporary folder of another host untouched this long is removed


def started(pid: int) -> float | None:
    """When process `pid` of this host started (seconds since the epoch), None when it is not running."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped (its parent may never reap it)
            return None
        return proc.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.Error:  # exists, not ours to inspect
        return -1.0


def alive(pid: int) -> bool:
    return started(pid) is not None


class StoreLock:
    """`with StoreLock(out):` — the sweep's exclusive hold on a run store; `recovered` names a stale holder."""

    def __init__(self, out: str | os.PathLike):
        self.path = Path(out) / LOCK_NAME
        self.recovered: str | None = None
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> "StoreLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def acquire(self) -> None:
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise GenprofError(f"{self.path.parent} is in use by another sweep ({_who(holder)}); wait for it to "
                               "finish, or use another --out") from None
        except OSError:  # a file system without flock: the holder's record decides alone
            pass
        holder = _read(fd)
        if holder and not self._stale(holder, os.fstat(fd).st_mtime):
            os.close(fd)
            raise GenprofError(f"{self.path.parent} is in use by another sweep ({_who(holder)}); if that sweep is "
                               f"gone, remove {self.path}")
        if holder:
            self.recovered = _who(holder)
        me = {"host": HOST, "pid": os.getpid(), "started": started(os.getpid()),
              "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        self._beat = threading.Thread(target=self._heartbeat, name="genprof-lock-heartbeat", daemon=True)
        self._beat.start()

    def _stale(self, holder: dict[str, Any], mtime: float) -> bool:
        if holder.get("host") == HOST and isinstance(holder.get("pid"), int):
            if holder["pid"] == os.getpid():
                return False  # this process holds it already
            began = started(holder["pid"])
            return began is None or (holder.get("started") not in (None, -1.0) and began != -1.0
                                     and abs(began - holder["started"]) > 1.0)
        return time.time() - mtime > STALE_S

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
            self._beat = None
        if self._fd is not None:
            try:
                os.ftruncate(self._fd, 0)
            finally:
                os.close(self._fd)  # closing drops the flock
                self._fd = None


def _read(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, 4096, 0)
        holder = json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return {"host": "?", "pid": "?"}  # unreadable: judged by its age like another host's
    return holder if holder is None or isinstance(holder, dict) else {"host": "?", "pid": "?"}


def _who(holder: dict[str, Any] | None) -> str:
    h = holder or {}
    return f"host {h.get('host', '?')}, pid {h.get('pid', '?')}, since {h.get('since', '?')}"


def clean_stale_tmp(out: str | os.PathLike) -> list[Path]:
    """Remove the `.tmp-*` folders whose process is gone: of this host by PID, of others by age."""
    removed = []
    out = Path(out)
    if not out.is_dir():
        return removed
    now = time.time()
    for p in out.iterdir():
        if not (p.name.startswith(TMP_PREFIX) and p.is_dir()):
            continue
        host, pid = tmp_owner(p.name)
        if host == HOST:
            if pid is not None and alive(pid):
                continue
        else:
            try:
                age = now - max(p.stat().st_mtime, *(c.stat().st_mtime for c in p.iterdir()))
            except OSError:
                continue
            if age < STALE_TMP_S:
                continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
