"""The study's two public sources: who made them, under which licence, their pinned sha256, and
their films read out of the archives as DVC imports them (docs/study-data.md).

- Kermany et al. 2018 (Mendeley Data v2, CC BY 4.0): ChestXRay2017.zip, `.../{train,test}/NORMAL/`
  and `.../PNEUMONIA/`; the class comes from the file name (`_bacteria_`, `_virus_`, NORMAL) and the
  patient from `personN_` or `IM-NNNN`.
- Hannover Medical School COVID-19 Image Repository (CC BY 3.0): a git archive holding `png/` and
  `data.csv`; every film is a COVID-19 patient's, kept when frontal (AP/PA) and taken on or after
  the day of admission (`admission_offset <= 0`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from stages.lib.core.errors import UserError

UNKNOWN = "UNKNOWN"  # a pin line not filled yet (tools/pin_sources.py fills it from the first download)
PIN_LINE = re.compile(r"^([0-9a-f]{64}|UNKNOWN) [ *](\S+)$")
FRONTAL = {"ap", "pa"}
# data.csv's admission_offset is days from the exam to the COVID-19 admission (-4: admitted 4 days
# before the film). A film taken before that admission may predate the infection: not surely positive.
MAX_ADMISSION_OFFSET = 0
SOURCES_CSV = "SOURCES.csv"  # every film: its source, path there, URL, DOI, licence, sha256


@dataclass(frozen=True)
class Dataset:
    name: str
    citation: str
    doi: str
    licence: str


DATASETS = {
    "kermany": Dataset(
        "kermany",
        "Kermany D, Zhang K, Goldbaum M. Labeled Optical Coherence Tomography (OCT) and Chest X-Ray "
        "Images for Classification. Mendeley Data, v2, 2018",
        "10.17632/rscbjbr9sj.2",
        "CC BY 4.0",
    ),
    "hannover": Dataset(
        "hannover",
        "Winther HB et al. COVID-19 Image Repository. Institute for Diagnostic and Interventional "
        "Radiology, Hannover Medical School; figshare, 2020",
        "10.6084/m9.figshare.12275009",
        "CC BY 3.0",
    ),
}


@dataclass(frozen=True)
class Film:
    path: str  # where it goes under the output folder
    dataset: str  # a DATASETS key
    original: str  # its path inside the source archive
    label: str  # one of the study's classes
    patient: str  # dataset-prefixed, so two sources' ids never meet
    sha256: str  # of its bytes: exact duplicates share it


# --- pins ----------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def read_pins(sums: Path) -> dict[str, str | None]:
    """{file name: sha256, or None where the line says UNKNOWN} from a sha256sum-style file."""
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise UserError(f"{sums} not found; it pins each source's sha256 (docs/study-data.md)") from err
    pins = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN_LINE.match(line)
        if m is None:
            raise UserError(f"{sums}:{number}: expected '<sha256>  <file>' or 'UNKNOWN  <file>', got {line!r}")
        pins[m[2]] = None if m[1] == UNKNOWN else m[1]
    return pins


def check_pinned(name: str, path: Path, sums: Path) -> str:
    """`path`'s sha256 when it is the one `sums` pins; otherwise a UserError naming the source. DVC's
    `update` accepts whatever the URL now serves, so this is what stops changed bytes."""
    pins = read_pins(sums)
    if path.name not in pins:
        raise UserError(
            f"{name} ({path}): no line for {path.name} in {sums}; add one ('UNKNOWN  {path.name}' "
            "until its sum is known)"
        )
    if not path.is_file():
        raise UserError(f"{name} ({path}) is missing; download it with `dvc update {path}.dvc` (make study-data)")
    actual = sha256_file(path)
    if pins[path.name] is None:
        raise UserError(
            f"{name} ({path}) has no pinned sha256 yet (UNKNOWN in {sums}); its sha256 is {actual}: "
            "if the download is the right one, `make pin-sources` writes it; commit the file"
        )
    if actual != pins[path.name]:
        raise UserError(
            f"{name} ({path}): sha256 {actual} differs from the pinned {pins[path.name]} in {sums}; "
            "the source changed: refusing it (docs/study-data.md says what to do)"
        )
    return actual


def import_url(path: Path) -> str:
    """The URL (or path) `path`'s DVC import file downloads it from: one place holds each URL."""
    stage = yaml.safe_load(Path(f"{path}.dvc").read_text(encoding="utf-8")) if Path(f"{path}.dvc").is_file() else None
    deps = (stage or {}).get("deps") or [{}]
    return str(deps[0].get("path", ""))


# --- reading the archives ------------------------------------------------------------------------

KERMANY_MEMBER = re.compile(r"(?:^|/)(?:train|test|val)/(normal|pneumonia)/([^/]+)$", re.IGNORECASE)
KERMANY_PATIENT = re.compile(r"(person\d+)_|(?:normal2-)?(im-\d+)", re.IGNORECASE)


def _skipped(member: str) -> bool:
    """macOS resource forks and dot files that zips carry beside the films."""
    return any(part.startswith((".", "__MACOSX")) for part in member.split("/"))


def kermany_label(member: str) -> str:
    folder, name = KERMANY_MEMBER.search(member).groups()
    stem = name.lower()
    if folder.lower() == "normal":
        return "normal"
    if "_bacteria_" in stem or "_virus_" in stem:
        return "bacteria" if "_bacteria_" in stem else "virus"
    raise UserError(f"Kermany archive: {member} is in PNEUMONIA but its name has neither _bacteria_ nor _virus_")


def kermany_patient(member: str) -> str:
    """person12_bacteria_3.jpeg -> person12; IM-0115-0001.jpeg and NORMAL2-IM-0115-0001.jpeg -> IM-0115
    (as the kaggle-pneumonia layout reads them: merging two ids can only keep a patient whole)."""
    stem = member.rsplit("/", 1)[-1]
    m = KERMANY_PATIENT.match(stem)
    if m is None:
        raise UserError(f"Kermany archive: {member}: no patient id (personN_ or IM-NNNN) in the file name")
    return "kermany:" + (m[1].lower() if m[1] else m[2].upper())


def read_kermany(archive: Path, out: Path) -> list[Film]:
    """Every film of ChestXRay2017.zip, written under out/images/kermany/<path in the zip>."""
    films = []
    try:
        with zipfile.ZipFile(archive) as z:
            for info in sorted(z.infolist(), key=lambda i: i.filename):
                member = info.filename
                if info.is_dir() or _skipped(member) or not KERMANY_MEMBER.search(member):
                    continue
                data = z.read(info)
                films.append(_write(out, "kermany", member, data, kermany_label(member), kermany_patient(member)))
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(
            f"Kermany source {archive}: not a readable zip ({err}); delete it and download it again"
        ) from err
    if not films:
        raise UserError(f"Kermany source {archive}: no films under train|test/NORMAL|PNEUMONIA/")
    return films


def read_hannover(archive: Path, out: Path) -> tuple[list[Film], dict[str, list[str]]]:
    """The frontal films taken on or after admission, written under out/images/hannover/<path in the
    archive>, and the films left out, by reason."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise UserError(
            f"Hannover source {archive}: not a readable tar archive ({err}); delete it and download it again"
        ) from err
    tables = sorted(name for name in files if name.split("/")[-1] == "data.csv" and name.count("/") <= 1)
    if len(tables) != 1:
        raise UserError(f"Hannover source {archive}: expected one data.csv at its top, found {len(tables) or 'none'}")
    root = tables[0].rpartition("/")[0]
    rows = list(csv.DictReader(io.StringIO(files[tables[0]].decode("utf-8-sig"))))
    needed = {"patient_id", "image_id", "projection", "admission_offset"}
    lacking = sorted(needed - set(rows[0] if rows else ()))
    if not rows or lacking:
        raise UserError(f"Hannover source {archive}: data.csv has no rows or lacks {', '.join(lacking)}")
    films, left_out = [], {"not frontal": [], "before admission or no admission offset": []}
    for row in sorted(rows, key=lambda r: r["image_id"]):
        member = f"{root}/png/{row['image_id']}.png" if root else f"png/{row['image_id']}.png"
        if row["projection"].strip().lower() not in FRONTAL:
            left_out["not frontal"].append(member)
        elif (
            not re.fullmatch(r"-?\d+", row["admission_offset"].strip())
            or int(row["admission_offset"]) > MAX_ADMISSION_OFFSET
        ):
            left_out["before admission or no admission offset"].append(member)
        elif member not in files:
            raise UserError(f"Hannover source {archive}: data.csv lists {row['image_id']}, but {member} is not in it")
        else:
            films.append(_write(out, "hannover", member, files[member], "COVID-19", f"hannover:{row['patient_id']}"))
    return films, left_out


def _write(out: Path, dataset: str, member: str, data: bytes, label: str, patient: str) -> Film:
    path = f"images/{dataset}/{member}"
    target = out / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return Film(path, dataset, member, label, patient, hashlib.sha256(data).hexdigest())
