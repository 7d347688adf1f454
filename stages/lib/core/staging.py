"""Staging folders: an output is assembled in a hidden folder beside it and swapped in at the end
(`swap_in`), so a refusal or a kill leaves the previous output whole.

A run killed with -9 cannot clean up, so each staging folder has a lock file beside it
(`.<out>.<random>.lock`, flock-ed for the run's lifetime; the kernel releases it when the process
dies): the next run removes every `.<out>.*` folder whose lock nobody holds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from stages.lib.core.errors import UserError

LOCK = ".lock"


@contextlib.contextmanager
def staging_dir(out_dir: Path, mode: int) -> Iterator[Path]:
    """A new empty folder beside `out_dir`, removed on exit unless moved away; stale ones go first."""
    remove_stale(out_dir)
    fd, lock = tempfile.mkstemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=LOCK)
    fcntl.flock(fd, fcntl.LOCK_EX)  # before the folder exists, so no other run takes it for stale
    staging = Path(lock[: -len(LOCK)])
    try:
        staging.mkdir(mode)
        staging.chmod(mode)  # mkdir's mode is filtered by the umask: the caller's mode already was
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        os.unlink(lock)
        os.close(fd)


def remove_stale(out_dir: Path) -> list[Path]:
    """Remove the staging folders (and lock files) of `out_dir` that no living process holds."""
    removed = []
    for path in sorted(out_dir.parent.glob(f".{out_dir.name}.*")):
        lock = path if path.name.endswith(LOCK) else path.with_name(path.name + LOCK)
        if _held(lock):
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def _held(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock taken just to test it


@contextlib.contextmanager
def interrupts_held() -> Iterator[None]:
    """Ctrl-C held back until the block ends, for steps that must happen together (the old output moved
    aside, the new one moved in: between them there is none). Python runs signal handlers in the main
    thread, whichever thread the signal reached: there the handler only notes it, and the one before
    (KeyboardInterrupt) runs at the end."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    before = signal.signal(signal.SIGINT, lambda *received: caught.append(received))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
        if caught and callable(before):
            before(*caught[0])


def swap_in(staging: Path, out_dir: Path) -> None:
    """The staging folder becomes `out_dir`; the old one is moved aside first and removed after. Ctrl-C is
    held back between the two renames (so an output is always there), and a failed rename puts the old
    one back."""
    old = out_dir.with_name(f".{out_dir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    with interrupts_held():
        try:
            if out_dir.exists():
                out_dir.rename(old)
            staging.rename(out_dir)
        except OSError as err:
            if old.exists() and not out_dir.exists():
                old.rename(out_dir)
            raise UserError(f"cannot write {out_dir}: {err.strerror}; check free disk space and permissions") from err
    shutil.rmtree(old, ignore_errors=True)
