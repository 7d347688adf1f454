"""What every layout reader builds on: the sample record, a label read as a class (core.names.label_key
compares them), CSV reading that names the file and line, the file a CSV's name means, the files of a
folder, and the check of every listed path."""

from __future__ import annotations

import csv
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.names import label_key
from stages.lib.data.formats import BadImage

OS_CLUTTER = {"thumbs.db", "desktop.ini"}  # besides dot files such as .DS_Store


@dataclass(frozen=True)
class Sample:
    path: Path  # the image file
    name: str  # how the cache index and predictions name it (unique within a split)
    label: int | None  # index into data.classes; None in a hidden-label test set
    patient: str | None = None
    source: str = ""  # where it was listed, for messages (file:line)
    metadata: tuple[tuple[str, str], ...] = ()  # (column, value) of a manifest's extra columns


def parse_label(text: str, classes) -> int | None:
    """The index of `text` in `classes`, or None when it names none of them."""
    keys = [label_key(c) for c in classes]
    return keys.index(label_key(text)) if label_key(text) in keys else None


def outside(label: str, classes) -> str:
    return f"label {label!r} is not one of data.classes ({', '.join(classes)})"


def read_csv(csv_path: Path) -> tuple[tuple[str, ...], list[tuple[int, dict]]]:
    """Header and (line number, row) pairs, cells stripped; an undecodable file is a UserError."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = tuple(c.strip() for c in (reader.fieldnames or ()))
            _check_separator(csv_path, columns)
            rows = [
                (line, {k.strip(): (v or "").strip() for k, v in r.items() if k is not None})
                for line, r in enumerate(reader, start=2)
            ]
    except (UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{csv_path}: not a UTF-8 CSV file ({err.__class__.__name__}); save it as UTF-8 CSV") from err
    return columns, rows


def _check_separator(csv_path: Path, columns: tuple[str, ...]) -> None:
    """A CSV saved with another separator (Excel in many locales writes ';') has one long column."""
    if len(columns) == 1:
        for sep, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "'|'")):
            if sep in columns[0]:
                raise UserError(
                    f"{csv_path}: its columns are separated by {name}, not commas; save it as comma-separated CSV"
                )


def find_listed(base: Path, name: str, where: str, listings: dict) -> Path:
    """The file a CSV's relative `name` means under `base`, each part matched under Unicode NFC: macOS
    writes names in NFD, most tools in NFC, and the two look alike. A name that two entries match is
    refused naming both. `listings` keeps each folder's entries for the CSV's other rows."""
    if Path(name).is_absolute():
        return base / name  # check_paths refuses it
    path = base
    for part in Path(name).parts:
        found = _entries(path, listings).get(unicodedata.normalize("NFC", part), [part])
        if len(found) > 1:
            forms = " and ".join(f"{ascii(n)} ({_form(n)})" for n in sorted(found))
            raise UserError(
                f"{where}: {name!r} matches {len(found)} files in {path} whose names differ only in Unicode form "
                f"(NFC/NFD: macOS writes NFD, most tools NFC): {forms}; rename or remove one of them"
            )
        path = path / found[0]
    return path


def _entries(folder: Path, listings: dict) -> dict[str, list[str]]:
    """A folder's entry names by their NFC form (none for what is not a readable folder)."""
    if folder not in listings:
        try:
            names = os.listdir(folder)
        except OSError:
            names = []
        listings[folder] = {}
        for n in names:
            listings[folder].setdefault(unicodedata.normalize("NFC", n), []).append(n)
    return listings[folder]


def _form(name: str) -> str:
    return next((f for f in ("NFC", "NFD") if unicodedata.is_normalized(f, name)), "mixed form")


def fix_missing(name: str, fix: str) -> str:
    """How to fix a listed file that is not there: a name with backslashes is a Windows path, which
    is one file name, not folders, on Linux and macOS."""
    if "\\" not in name:
        return fix
    posix = name.replace("\\", "/")
    return f"it has backslashes (a Windows path?): write it with / ({posix}), which every system reads"


def files_in(folder: Path) -> list[Path]:
    """Every file under `folder` but the ones operating systems leave behind. A file that is not an
    image is kept, so preprocess refuses (or skips and reports) it instead of silently dropping it;
    so is a broken or looping file link. Linked folders are followed; one that leads back to a
    folder it is in is refused."""
    found = []

    def walk(folder: Path, above: tuple[Path, ...]) -> None:
        real = folder.resolve()
        if real in above:
            raise UserError(f"{folder}: a symlink loop (it leads back to {real}); remove the link")
        for p in sorted(folder.iterdir()):
            if p.name.startswith(".") or p.name.lower() in OS_CLUTTER:
                continue
            if p.is_dir():
                walk(p, above + (real,))
            else:
                found.append(p)

    walk(folder, ())
    return sorted(found)


def subdirs(folder: Path, name: str | None = None) -> list[Path]:
    """Subfolders (named `name`, ignoring case). Names that differ only in case (NORMAL/ and
    normal/, Train/ and train/) are all returned: keeping one would silently drop the other's images."""
    if not folder.is_dir():
        return []
    return [p for p in sorted(folder.iterdir()) if p.is_dir() and (name is None or p.name.lower() == name)]


def check_paths(samples: list[Sample], data_dir: Path) -> list[BadImage]:
    """Refuse any path that leaves the data folder (also through symlinks); return the missing files.

    A symlink into DVC's cache (`cache.type symlink`) is inside the project, so it is allowed.
    """
    roots = [data_dir.resolve(), (data_dir.parent / ".dvc" / "cache").resolve()]
    missing = []
    for s in samples:
        listed = Path(s.name)
        where = s.source or s.path
        if listed.is_absolute() or ".." in listed.parts:
            raise UserError(f"{where}: {s.name!r} escapes the data folder {data_dir}; use a path relative to it")
        try:
            real = s.path.resolve()
        except (RuntimeError, OSError):  # Python raises RuntimeError for a loop before 3.13, OSError after
            missing.append(
                BadImage(f"{where}: {s.path} is a symlink loop; point the link at the image or remove it", s.path)
            )
            continue
        if not any(real.is_relative_to(r) for r in roots):
            raise UserError(
                f"{where}: {s.path} resolves to {real}, outside the data folder {data_dir}; "
                "copy the file into the data folder instead of linking it"
            )
        if not real.is_file():
            fix = fix_missing(s.name, "fix the path or add the image")
            missing.append(BadImage(f"{where}: image {s.path} not found; {fix}", s.path))
    return missing
