"""Dataset layouts under the data folder -> the same sample records for every layout. Each layout is one
record of LAYOUTS (at the end: its name, what marks a folder as one, its reader), which detection, the
readers' dispatch and the check of params' data.layout all read; adding a layout is a reader and a record here.

- course:           {train,val,test}_images/ + {train,val,test}_data.csv (new_filename + one-hot
                    columns; a test CSV with only new_filename is a hidden-label test set)
- folders:          {train,val,test}/<class>/*  (torchvision ImageFolder style)
- kaggle-pneumonia: [chest_xray/]{train,val,test}/{NORMAL,PNEUMONIA}/*, class (bacteria/virus, or
                    pneumonia when data.classes has it) and patient from the file name
                    (personN_bacteria_M.jpeg), plus an optional COVID-19 folder (covid/, covid-19/
                    or covid19/ beside chest_xray/, flat or with split folders)
- manifest:         manifest.csv with path,label and optional split, patient_id columns; any other
                    column (source, sex, age, view...) is film metadata, kept for subgroup metrics

Labels are indices into `data.classes` (`classes` below); a label outside it is refused naming
the file. Readers only parse; `check_paths` then refuses paths that escape the data folder and
finds missing files, and `ensure_splits` makes the val (and, for a manifest without splits, the
test) split.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stages.lib.core.errors import UserError
from stages.lib.core.names import SPLITS
from stages.lib.data.records import Sample, files_in, find_listed, outside, parse_label, read_csv, subdirs

MANIFEST = "manifest.csv"
COVID_FOLDERS = ("covid", "covid-19", "covid19", "covid_19")


@dataclass(frozen=True)
class Layout:
    """One dataset layout: its name (params' data.layout), the file or folders that mark a data folder as one
    (said when a folder is in no known layout), whether a folder is one, and its reader: (data folder,
    data.classes) -> the samples per split, a split the data lacks absent."""

    name: str
    mark: str
    holds: Callable[[Path], bool]
    read: Callable[[Path, Sequence[str]], dict[str, list[Sample]]]


def check_layout(name: str) -> None:
    """Refuse a data.layout that is neither auto nor a layout's name (params cannot: the layouts live here)."""
    names = [layout.name for layout in LAYOUTS]
    if name != "auto" and name not in names:
        raise UserError(f"data.layout must be auto or one of {', '.join(names)}, got {name!r}; fix it in params.yaml")


def detect_layout(data_dir: Path) -> str:
    """The name of the first layout (in LAYOUTS' order) that `data_dir` holds."""
    found = next((layout for layout in LAYOUTS if layout.holds(data_dir)), None)
    if found is None:
        marks = [layout.mark for layout in LAYOUTS]
        raise UserError(
            f"{data_dir}: no known layout ({', '.join(marks[:-1])} or {marks[-1]}); arrange the data as README "
            "'Bring your own data' shows or set data.layout"
        )
    return found.name


def read_layout(data_dir: Path, layout: str, classes) -> dict[str, list[Sample]]:
    """Samples per split for the layout named `layout` (every caller resolves auto first, with
    `detect_layout`), labelled over `classes`; a split the data lacks is absent."""
    check_layout(layout)
    named = {known.name: known for known in LAYOUTS}
    return named[layout].read(data_dir, classes)


# --- course --------------------------------------------------------------------------------------


def read_course(data_dir: Path, classes) -> dict[str, list[Sample]]:
    return {
        split: read_course_split(data_dir, split, classes)
        for split in SPLITS
        if split == "train" or (data_dir / f"{split}_data.csv").is_file()
    }


def read_course_split(data_dir: str | os.PathLike, split: str, classes) -> list[Sample]:
    """Parse `<split>_data.csv`: new_filename plus one-hot columns named by `classes` (only
    new_filename for a hidden test set)."""
    data_dir = Path(data_dir)
    csv_path = data_dir / f"{split}_data.csv"
    if not csv_path.is_file():
        raise UserError(f"{csv_path} not found; the course layout needs {split}_data.csv beside {split}_images/")
    columns, rows = read_csv(csv_path)
    hidden = split == "test" and columns == ("new_filename",)
    expected = ("new_filename", *classes)
    missing = [c for c in expected if c not in columns]
    if missing and not hidden:
        raise UserError(
            f"{csv_path}: missing column(s) {', '.join(missing)}; expected header "
            f"{','.join(expected)} (data.classes; a hidden-label test CSV may have new_filename only)"
        )
    image_dir, listings = data_dir / f"{split}_images", {}  # each folder listed once, for find_listed
    samples = [_course_row(row, line, csv_path, image_dir, hidden, classes) for line, row in rows]
    samples = [replace(s, path=find_listed(image_dir, s.name, s.source, listings)) for s in samples]
    if not samples:
        raise UserError(f"{csv_path} lists no images; add rows or remove the split")
    return samples


def _course_row(row: dict, line: int, csv_path: Path, image_dir: Path, hidden: bool, classes) -> Sample:
    name = row["new_filename"]
    where = f"{csv_path}:{line}"
    label = None
    if not hidden:
        onehot = [_zero_or_one(row[c], c, where, name) for c in classes]
        if sorted(onehot) != [0] * (len(classes) - 1) + [1]:
            raise UserError(
                f"{where}: row for {name!r} must have exactly one 1 among {', '.join(classes)}, "
                f"got {onehot}; fix its label"
            )
        label = onehot.index(1)
    return Sample(path=image_dir / name, name=name, label=label, source=where)


def _zero_or_one(text: str, column: str, where: str, name: str) -> int:
    """A one-hot cell: exactly 0 or 1 (also written 0.0, 1.0); a soft label, 0.9, inf or nan is refused."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value not in (0.0, 1.0):
        raise UserError(
            f"{where}: label columns must be 0 or 1, got {column} = {text!r} in the row for {name!r}; "
            "fix the row (soft labels are not supported)"
        )
    return int(value)


# --- folders and Kaggle --------------------------------------------------------------------------


def read_folders(data_dir: Path, classes) -> dict[str, list[Sample]]:
    out = {}
    for split_dir in subdirs(data_dir):
        split = split_dir.name.lower()
        if split not in SPLITS:
            continue
        samples = out.setdefault(split, [])
        for folder in subdirs(split_dir):
            label = parse_label(folder.name, classes)
            if label is None:
                raise UserError(
                    f"{folder}: folder name {folder.name!r} is not one of data.classes "
                    f"({', '.join(classes)}); rename or remove it, or add the class to data.classes"
                )
            samples += [Sample(p, p.relative_to(data_dir).as_posix(), label) for p in files_in(folder)]
    if "train" not in out:
        raise UserError(f"{data_dir}: the folders layout needs train/<class>/ folders")
    return out


def _kaggle_root(data_dir: Path) -> Path | None:
    # The Kaggle zip unpacks to chest_xray/ and, in some versions, chest_xray/chest_xray/.
    for root in (data_dir, data_dir / "chest_xray", data_dir / "chest_xray" / "chest_xray"):
        classes = {p.name.lower() for train in subdirs(root, "train") for p in subdirs(train)}
        if "normal" in classes and "pneumonia" in classes:
            return root
    return None


def kaggle_sample(path: Path, data_dir: Path, classes) -> Sample:
    """NORMAL/IM-0115-0001.jpeg -> normal, IM-0115; PNEUMONIA/person1_bacteria_1.jpeg -> bacteria
    (or pneumonia, when that is one of `classes`), person1."""
    name = path.relative_to(data_dir).as_posix()
    stem = path.stem.lower()
    if path.parent.name.lower() == "normal" or parse_label("pneumonia", classes) is not None:
        label = path.parent.name.lower()
    elif "bacteria" in stem or "virus" in stem:
        label = "bacteria" if "bacteria" in stem else "virus"
    else:
        raise UserError(
            f"{path}: a PNEUMONIA file name must contain 'bacteria' or 'virus' (e.g. "
            "person1_bacteria_1.jpeg); rename it or move it out of the data folder"
        )
    index = parse_label(label, classes)
    if index is None:
        raise UserError(
            f"{path}: {outside(label, classes)}; add it to data.classes or move the file out of the data folder"
        )
    m = re.match(r"(person\d+)_|(?:normal2-)?(im-\d+)", stem)
    patient = (m.group(1) or m.group(2).upper()) if m else None
    return Sample(path, name, index, patient)


def read_kaggle(data_dir: Path, classes) -> dict[str, list[Sample]]:
    root = _kaggle_root(data_dir)
    if root is None:
        raise UserError(f"{data_dir}: kaggle-pneumonia needs chest_xray/train/NORMAL and chest_xray/train/PNEUMONIA")
    out = {}
    for split in SPLITS:
        for split_dir in subdirs(root, split):
            out.setdefault(split, []).extend(
                kaggle_sample(p, data_dir, classes)
                for d in ("normal", "pneumonia")
                for folder in subdirs(split_dir, d)
                for p in files_in(folder)
            )
    # Every COVID folder is read (covid/ and COVID-19/ side by side are both COVID-19 images).
    for covid in [p for p in subdirs(data_dir) if p.name.lower() in COVID_FOLDERS]:
        images = files_in(covid)
        if not images:
            continue
        label = parse_label("COVID-19", classes)
        if label is None:
            raise UserError(
                f"{images[0]}: {outside('COVID-19', classes)}; add it to data.classes "
                f"or move {covid} out of the data folder"
            )
        split_dirs = [p for p in subdirs(covid) if p.name.lower() in SPLITS]
        # A flat COVID folder goes to train; ensure_splits then carves val from it by patient.
        for folder in split_dirs or [covid]:
            split = folder.name.lower() if split_dirs else "train"
            out.setdefault(split, []).extend(
                Sample(p, p.relative_to(data_dir).as_posix(), label) for p in files_in(folder)
            )
    return out


# --- manifest ------------------------------------------------------------------------------------


def read_manifest(data_dir: Path, classes) -> dict[str, list[Sample]]:
    csv_path = data_dir / MANIFEST
    if not csv_path.is_file():
        raise UserError(f"{csv_path} not found; the manifest layout needs {MANIFEST} with path,label columns")
    columns, rows = read_csv(csv_path)
    if "path" not in columns or "label" not in columns:
        raise UserError(
            f"{csv_path}: columns {','.join(columns) or '(none)'}; expected path,label and "
            "optionally split,patient_id and film metadata columns"
        )
    extra = [c for c in columns if c not in MANIFEST_COLUMNS]
    _check_metadata_columns(csv_path, columns, extra)
    out: dict[str, list[Sample]] = {}
    listings: dict = {}  # each folder listed once, for find_listed
    for line, row in rows:
        where = f"{csv_path}:{line}"
        split = row.get("split", "").lower() or "train"
        if split not in SPLITS:
            raise UserError(f"{where}: split {row['split']!r} is not one of {', '.join(SPLITS)}; fix the row")
        label = parse_label(row["label"], classes) if row["label"] else None
        if label is None and (row["label"] or split != "test"):
            raise UserError(
                f"{where}: label {row['label']!r} of {row['path']!r} is not one of data.classes "
                f"({', '.join(classes)}; only test rows may leave it empty); fix the label or add "
                "the class to data.classes"
            )
        out.setdefault(split, []).append(
            Sample(
                find_listed(data_dir, row["path"], where, listings),
                row["path"],
                label,
                row.get("patient_id") or None,
                where,
                tuple((c, row.get(c, "")) for c in extra),
            )
        )
    if not out:
        raise UserError(f"{csv_path} lists no images; add rows")
    if "split" not in columns:
        out["train"] = out.pop("train", [])  # no splits given: ensure_splits makes val and test
    return out


MANIFEST_COLUMNS = ("path", "label", "split", "patient_id")
BUILT_IN_METADATA = ("format", "bit_depth")  # every film's, from its file (stages/lib/results/subgroups.py)


def _check_metadata_columns(csv_path: Path, columns: tuple[str, ...], extra: list[str]) -> None:
    """Extra manifest columns are film metadata; refuse a nameless, repeated or built-in one."""
    if "" in columns:
        raise UserError(f"{csv_path}: column {columns.index('') + 1} has no name; name it or delete it")
    repeated = next((c for c in columns if columns.count(c) > 1), None)
    if repeated:
        raise UserError(f"{csv_path}: column {repeated!r} appears twice; keep one")
    clash = next((c for c in extra if c in BUILT_IN_METADATA or c in ("filename",)), None)
    if clash:
        raise UserError(
            f"{csv_path}: column {clash!r} is a name the cache uses for every film; rename it (e.g. {clash}_given)"
        )


# Every layout, declared once. Detection takes the first that a folder holds, so the order matters: a
# manifest or a course CSV wins over folders, and a Kaggle tree (train/NORMAL, train/PNEUMONIA) is also
# folders-shaped.
LAYOUTS = (
    Layout("manifest", MANIFEST, lambda d: (d / MANIFEST).is_file(), read_manifest),
    Layout("course", "course train_data.csv", lambda d: (d / "train_data.csv").is_file(), read_course),
    Layout("kaggle-pneumonia", "Kaggle chest_xray/", lambda d: _kaggle_root(d) is not None, read_kaggle),
    Layout("folders", "folders train/<class>/", lambda d: (d / "train").is_dir(), read_folders),
)
