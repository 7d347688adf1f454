"""Progress of a long loop (preprocess decoding films, cxr4-predict classifying them), on a terminal and off one.

On a terminal: tqdm's bar, as before. Off one (a job scheduler's log, `> log 2>&1`, a notebook), tqdm's
`disable=None` drew nothing, and a bar drawn anyway piles its carriage returns onto one line. There, tqdm
still keeps the count, the rate and the time left, and draws them as one plain line every INTERVAL
seconds (its `mininterval`/`maxinterval`), the first after INTERVAL (`delay`: a short run prints none),
and a last line at the end of a run that printed any. `_Lines` only turns each redraw into a line.
"""

from __future__ import annotations

import sys
from typing import TextIO

from tqdm.auto import tqdm

INTERVAL = 30.0  # seconds between lines off a terminal
LINE = "{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {rate_fmt}, {remaining} left, {elapsed} elapsed"


class _Lines:
    """A file for tqdm off a terminal: each redraw ("\\r", the status, padding) becomes one line, its
    spaces single; blank clears, the newline at the end and a redraw at the count of the last line
    (tqdm's closing one) write nothing."""

    def __init__(self, file: TextIO):
        self.file, self.last = file, ""

    def write(self, text: str) -> None:
        line = " ".join(text.split())
        count = line.split(" (")[0]  # "predict: 8/8 img"
        if line and count != self.last:
            self.file.write(line + "\n")
            self.last = count

    def flush(self) -> None:
        self.file.flush()


def progress(iterable=None, *, total: int, desc: str, unit: str, file: TextIO | None = None) -> tqdm:
    """A tqdm over `iterable` (or updated by hand) that reports on `file` (stderr): a bar on a
    terminal, a line every INTERVAL seconds elsewhere."""
    file = file or sys.stderr
    if file.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=file)
    return tqdm(
        iterable,
        total=total,
        desc=desc,
        unit=unit,
        file=_Lines(file),
        bar_format=LINE,
        mininterval=INTERVAL,
        maxinterval=INTERVAL,
        delay=INTERVAL,
    )
