"""User-facing endings: one line, a non-zero exit, no traceback. A mistake the user can fix (a
UserError) names the file and the fix (exit 2); Ctrl-C says what was kept (exit 130)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad path, bad CSV, bad param). Printed as one line."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, re-raised by a command that can say what it kept (`Interrupted("out.csv unchanged")`)."""


EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what a shell reports for a command ended by Ctrl-C
# True of every command here: each output goes through files.atomic_path or a staging folder.
KEPT = (
    "no file is half-written: each output is replaced whole or not at all, so those not yet replaced are as they were"
)


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a command's main: a UserError ends the process with its message and exit code 2, Ctrl-C
    with one line saying what was kept (an `Interrupted`'s own words, else KEPT) and exit code 130."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)
        except KeyboardInterrupt as err:
            print(f"interrupted: {err if isinstance(err, Interrupted) and str(err) else KEPT}", file=sys.stderr)
            sys.exit(EXIT_INTERRUPTED)

    return wrapper
