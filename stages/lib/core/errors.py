"""User-facing failures: one line naming the file and the fix, a non-zero exit, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable


class UserError(Exception):
    """A mistake the user can fix (bad path, bad CSV, bad param). Printed as one line."""


EXIT_USER_ERROR = 2


def cli(main: Callable[..., None]) -> Callable[..., None]:
    """Wrap a stage's main so a UserError ends the process with its message and exit code 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_USER_ERROR)

    return wrapper
