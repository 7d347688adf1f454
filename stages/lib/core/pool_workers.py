"""Pool worker processes that die with their parent and leave Ctrl-C to it.

A ProcessPoolExecutor worker whose parent is killed with -9 is never told: it blocks on its task
queue forever, holding its memory (issue 20: 529 MB each). On Linux the kernel signals it instead
(prctl PR_SET_PDEATHSIG); elsewhere a thread watches the parent id.

Ctrl-C in a terminal signals the whole process group: a worker waiting for a task would die printing
its own KeyboardInterrupt traceback. Workers ignore it; the parent ends the pool and says what it kept.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int) -> None:
    """Call first in a worker's initializer; `parent` is the pid that created the pool."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        threading.Thread(target=_watch, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)


def ignore_interrupts() -> None:
    """A pool initializer: Ctrl-C is the parent's to handle (errors.cli), not each worker's."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)
