"""One run of a sweep in its own process: `python -m genprof.sweep_worker SPEC_JSON OUT`.

Runs the spec with `genprof.api.run` (which commits the run directory
atomically under OUT) and prints one line `GENPROF_SWEEP_RESULT {json}` with
the run's path, status and reason, or `{"error": ...}` for a spec refused
before anything was written. Exit code: 0 ok, 1 failed run, 2 refused spec.
The sweep treats any other ending (a signal, a crash) as a failed run.
"""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    from genprof.errors import GenprofError
    from genprof.sweep import RESULT_MARK

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m genprof.sweep_worker SPEC_JSON OUT", file=sys.stderr)
        return 2
    try:
        from genprof import api
        from genprof.spec import RunSpec

        spec = RunSpec.from_dict(json.loads(argv[0]))
        res = api.run(spec, out=argv[1])
    except (GenprofError, json.JSONDecodeError, TypeError) as e:
        print(RESULT_MARK + json.dumps({"error": f"{e}".splitlines()[0] if str(e) else type(e).__name__}), flush=True)
        return 2
    print(RESULT_MARK + json.dumps({"path": str(res.path), "status": res.meta["status"],
                                    "reason": res.meta.get("reason", "")}), flush=True)
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
