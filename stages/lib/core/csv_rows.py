"""CSV rows that read back as written whatever a file name holds.

Python's csv writer quotes a field holding the delimiter, the quote character or a character of
its line terminator. Our files end lines with "\\n" alone, so a name holding "\\r" went out unquoted
and a reader split the row there (issue 20). A row with a "\\r" in any field is written fully quoted;
every other row stays as before, so ordinary files do not change by a byte.
"""

from __future__ import annotations

import csv


class RowWriter:
    """csv.writer's writerow/writerows with "\\n" line ends, quoting rows that hold a "\\r"."""

    def __init__(self, f):
        self._plain = csv.writer(f, lineterminator="\n")
        self._quoted = csv.writer(f, lineterminator="\n", quoting=csv.QUOTE_ALL)

    def writerow(self, row) -> None:
        (self._quoted if any("\r" in str(v) for v in row) else self._plain).writerow(row)

    def writerows(self, rows) -> None:
        for row in rows:
            self.writerow(row)
