"""One run of a sweep in its own process: `python -m genprof.sweep_worker SPEC_JSON OUT [--parent PID]`.

Runs the spec with `genprof.api.run` (which commits the run directory
atomically under OUT) and prints one line `GENPROF_SWEEP_RESULT {json}` with
the run's path, status and reason, or `{"error": ...}` for a spec refused
before anything was written. Exit code: 0 ok, 1 failed run, 2 refused spec.
The sweep treats any other ending (a signal, a crash) as a failed run.

With `--parent PID` (the sweep) the worker dies with the sweep: on Linux the
kernel sends it SIGKILL when its parent exits (prctl PR_SET_PDEATHSIG, asked
first thing, before the heavy imports), elsewhere a thread checks every 0.2 s
that its parent is still PID. The sweep checked the spec's memory on this
machine already, so the worker does not trace it again.
"""

from __future__ import annotations

import json
import os
import signal
import sys


def die_with_parent(parent: int) -> None:
    """SIGKILL this process as soon as process `parent` (its parent) exits, or now if it has already."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            ok = libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) == 0  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            ok = False
        if ok:
            if os.getppid() != parent:  # the parent died before the request: nobody would send the signal
                os.kill(os.getpid(), signal.SIGKILL)
            return
    import threading
    import time

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="genprof-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parent = None
    if len(argv) == 4 and argv[2] == "--parent" and argv[3].isdigit():
        parent = int(argv[3])
        die_with_parent(parent)
        argv = argv[:2]
    if len(argv) != 2:
        print("usage: python -m genprof.sweep_worker SPEC_JSON OUT [--parent PID]", file=sys.stderr)
        return 2
    from genprof.errors import GenprofError
    from genprof.sweep import RESULT_MARK

    try:
        from genprof import api
        from genprof.spec import RunSpec

        spec = RunSpec.from_dict(json.loads(argv[0]))
        res = api.run(spec, out=argv[1], memory=parent is None)  # a sweep's parent checked it
    except (GenprofError, json.JSONDecodeError, TypeError) as e:
        print(RESULT_MARK + json.dumps({"error": f"{e}".splitlines()[0] if str(e) else type(e).__name__}), flush=True)
        return 2
    print(RESULT_MARK + json.dumps({"path": str(res.path), "status": res.meta["status"],
                                    "reason": res.meta.get("reason", "")}), flush=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
