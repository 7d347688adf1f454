"""Pin downloaded sources: their sha256 becomes their line in a SHA256SUMS file beside them.
python -m tools.pin_sources sources/SHA256SUMS sources/ChestXRay2017.zip   (make pin-sources)

Run it only when `make study-data` refused a download as differing from its pin (or as having none),
and after checking that download as the refusal says (docs/study-data.md, "Pins"); then commit the
file. Comment lines and the other files' lines stay as they were.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stages.lib.core.errors import UserError, cli
from stages.lib.core.files import sha256_file, write_text


def pin(sums: Path, files: list[Path]) -> list[str]:
    """Rewrite `sums` with each of `files` hashed (its line replaced, or added); return their names."""
    elsewhere = [str(f) for f in files if f.resolve().parent != sums.resolve().parent]
    if elsewhere:  # a line names a file by its name alone, as sha256sum -c reads it in that folder
        raise UserError(f"{', '.join(elsewhere)} not beside {sums}: pin only the files in its folder")
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{', '.join(missing)} missing: `make study-data` downloads it")
    sums_of = {f.name: sha256_file(f) for f in files}
    lines = sums.read_text(encoding="utf-8").splitlines() if sums.is_file() else []
    kept = [line for line in lines if not _names(line, sums_of)]
    write_text(sums, "\n".join(kept + [f"{digest}  {name}" for name, digest in sums_of.items()]) + "\n")
    return list(sums_of)


def _names(line: str, names) -> bool:
    """Whether a line (not a comment) is one of `names`' pin lines, a well-formed one or not."""
    return bool(line.strip()) and not line.startswith("#") and line.split()[-1].lstrip("*") in names


@cli
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sums", type=Path, help="the SHA256SUMS file (sources/SHA256SUMS)")
    parser.add_argument("files", type=Path, nargs="+", help="the downloads to pin, beside it")
    args = parser.parse_args()
    print(f"pinned {', '.join(pin(args.sums, args.files))} in {args.sums}; commit it")


if __name__ == "__main__":
    main()
