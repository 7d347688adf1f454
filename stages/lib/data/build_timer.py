"""Seconds per part of the last preprocess builds, for bench/scale.py: kept here, never in the data report
(which must not vary between identical runs) and never in a file's facts."""

from __future__ import annotations

import contextlib
import time
from collections import Counter

seconds: Counter = Counter()


@contextlib.contextmanager
def timed(part: str):
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[part] += time.perf_counter() - start
