"""User-facing errors of genprof.

A `GenprofError` is a mistake the user can fix (an unknown workload, size or
option, a corrupt run directory). Its message is one line that says what was
wrong and what is valid; the CLI prints it and exits with code 2, with no
traceback. Bugs and failures inside a run are ordinary exceptions, recorded in
the run directory as a failed run. This module is not for logging.
"""

from __future__ import annotations


class GenprofError(Exception):
    """A user error: one line, names the valid choices."""


def unknown_choice(what: str, got: object, valid: list[str] | tuple[str, ...]) -> GenprofError:
    """Error for a value outside a fixed set: `unknown size 'huge'; valid: tiny, small, paper`."""
    return GenprofError(f"unknown {what} {got!r}; valid: {', '.join(map(str, valid))}")
