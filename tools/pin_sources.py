"""Fill the UNKNOWN lines of a SHA256SUMS file from the downloaded sources beside it:
python -m tools.pin_sources sources/SHA256SUMS   (make pin-sources)

Run it once, by the first person who downloads the sources (`make study-data` stops and says so),
after checking that the downloads are the right ones; then commit the file. A pin already known is
never changed: a source whose bytes differ from it stays refused (docs/study-data.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import write_text
from stages.lib.study.sources import PIN_LINE, UNKNOWN, sha256_file


def pin(sums: Path) -> list[str]:
    """Rewrite `sums` with each UNKNOWN line's file hashed; return the names pinned."""
    lines, pinned = [], []
    for line in sums.read_text(encoding="utf-8").splitlines():
        m = PIN_LINE.match(line)
        if m and m[1] == UNKNOWN:
            source = sums.parent / m[2]
            if not source.is_file():
                raise UserError(f"{source} is missing: download it first (dvc update {source}.dvc)")
            line = f"{sha256_file(source)}  {m[2]}"
            pinned.append(m[2])
        lines.append(line)
    write_text(sums, "\n".join(lines) + "\n")
    return pinned


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sums", type=Path, help="the SHA256SUMS file (sources/SHA256SUMS)")
    pinned = pin(parser.parse_args().sums)
    print(
        f"pinned {', '.join(pinned)}; commit the file" if pinned else "nothing to pin: every line has a sha256",
        file=sys.stdout,
    )


if __name__ == "__main__":
    main()
