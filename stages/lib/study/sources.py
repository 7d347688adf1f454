"""The study's two public sources: who made them, under which licence, what pins them, and their
films read as DVC imports them (docs/study-data.md).

- Kermany et al. 2018 (Mendeley Data v2, CC BY 4.0): ChestXRay2017.zip (`dvc import-url`, pinned by
  its sha256 in SHA256SUMS), `.../{train,test}/NORMAL/` and `.../PNEUMONIA/`; the class comes from
  the file name (`_bacteria_`, `_virus_`, NORMAL) and the patient from `personN_` or `IM-NNNN`.
- Hannover Medical School COVID-19 Image Repository (CC BY 3.0): `png/` and `data.csv` of its git
  repository (`dvc import` at a full commit, which names their content exactly: the commit is the
  pin); every film is a COVID-19 patient's, kept when frontal (AP/PA) and taken on or after the day
  of admission (`admission_offset <= 0`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from stages.lib.core.errors import UserError
from stages.lib.core.files import sha256_file

PIN_LINE = re.compile(r"^([0-9a-f]{64}) [ *](\S+)$")  # sha256sum's format
COMMIT = re.compile(r"[0-9a-f]{40}")  # a full git commit: a branch or tag can move, a commit cannot
HANNOVER_IMPORTS = ("png", "data.csv")  # what `dvc import` takes from the repository, one .dvc file each
FRONTAL = {"ap", "pa"}
# data.csv's admission_offset is days from the exam to the COVID-19 admission (-4: admitted 4 days
# before the film). A film taken before that admission may predate the infection: not surely positive.
MAX_ADMISSION_OFFSET = 0


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
    original: str  # its path inside the source (the zip, the repository)
    label: str  # one of the study's classes
    patient: str  # dataset-prefixed, so two sources' ids never meet
    sha256: str  # of its bytes: exact duplicates share it


# --- pins ----------------------------------------------------------------------------------------


def read_pins(sums: Path) -> dict[str, str]:
    """{file name: sha256} from a sha256sum-style file (comment lines start with #)."""
    try:
        lines = sums.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise UserError(f"{sums} not found; it pins each downloaded source's sha256 (docs/study-data.md)") from err
    pins = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        m = PIN_LINE.match(line)
        if m is None:
            raise UserError(f"{sums}:{number}: expected '<sha256>  <file>', got {line!r}")
        pins[m[2]] = m[1]
    return pins


def check_pinned(name: str, path: Path, sums: Path, content: str) -> str:
    """`path`'s sha256 when it is the one `sums` pins; otherwise a UserError naming the source, what a
    right download holds (`content`) and the command that re-pins it. DVC's `update` accepts whatever
    the URL now serves, so this is what stops changed bytes."""
    pins = read_pins(sums)
    if not path.is_file():
        raise UserError(f"{name} ({path}) is missing; `make study-data` downloads it")
    actual = sha256_file(path)
    if pins.get(path.name) != actual:
        pinned = f"differs from the pin {pins[path.name]}" if path.name in pins else "has no pin"
        raise UserError(
            f"{name} ({path}): sha256 {actual} {pinned} in {sums}, refused; check the download ({content}; "
            f"a second download gives the same sum), then `make pin-sources` pins it and you commit {sums}"
        )
    return actual


def import_stage(dvcfile: Path) -> dict:
    """A DVC import file's content; {} when there is none."""
    return (yaml.safe_load(dvcfile.read_text(encoding="utf-8")) or {}) if dvcfile.is_file() else {}


def _import_dep(dvcfile: Path) -> dict:
    """The one dependency a DVC import file records (its URL, or its git repository); {} when none."""
    return (import_stage(dvcfile).get("deps") or [{}])[0]


def import_origin(path: Path) -> tuple[str, str | None]:
    """(URL, git commit) `path` is imported from, read from its .dvc file (one place holds each URL):
    a git repository at `rev_lock` (`dvc import`), or a URL and None (`dvc import-url`)."""
    dep = _import_dep(Path(f"{path}.dvc"))
    if "repo" in dep:
        return str(dep["repo"].get("url", "")), dep["repo"].get("rev_lock")
    return str(dep.get("path", "")), None


def check_commit(name: str, folder: Path) -> str:
    """The full git commit that each of `folder`'s imports (HANNOVER_IMPORTS) is locked at: it names
    their content exactly, so it is their pin. Refused: an import missing, one at a branch or tag
    (`dvc update` would follow it silently), or two commits."""
    commits = set()
    for part in HANNOVER_IMPORTS:
        dvcfile = folder / f"{part}.dvc"
        repo = _import_dep(dvcfile).get("repo")
        if repo is None:
            raise UserError(
                f"{name}: {dvcfile} is missing or is no `dvc import` of a git repository; `git checkout {dvcfile}`"
            )
        rev, lock = str(repo.get("rev", "")), str(repo.get("rev_lock", ""))
        if not COMMIT.fullmatch(rev) or lock != rev:
            raise UserError(
                f"{name}: {dvcfile} imports at rev {rev or 'none'} (rev_lock {lock or 'none'}), not at one full "
                f"commit, which can move silently; {_update_at_commit(folder)}"
            )
        commits.add(rev)
    if len(commits) > 1:
        raise UserError(
            f"{name}: the imports in {folder} are at different commits ({', '.join(sorted(commits))}); "
            + _update_at_commit(folder)
        )
    return commits.pop()


def _update_at_commit(folder: Path) -> str:
    """The command that puts both imports at one commit (in sources/, their DVC project)."""
    dvcfiles = " ".join(f"{folder.name}/{part}.dvc" for part in HANNOVER_IMPORTS)
    return f"`cd {folder.parent} && dvc update --rev <40-hex commit> {dvcfiles}`"


# --- reading the sources -------------------------------------------------------------------------

KERMANY_MEMBER = re.compile(r"(?:^|/)(?:train|test|val)/(normal|pneumonia)/([^/]+)$", re.IGNORECASE)
KERMANY_PATIENT = re.compile(r"(person\d+)_|(?:normal2-)?(im-\d+)", re.IGNORECASE)
KERMANY_CONTENT = "5,856 films under chest_xray/train and chest_xray/test"  # Mendeley v2's count, for a check


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


def read_hannover(folder: Path, out: Path) -> tuple[list[Film], dict[str, list[str]]]:
    """The frontal films taken on or after admission, from `folder` (the repository's `png/` and
    `data.csv`, as imported), written under out/images/hannover/png/, and the films left out, by reason."""
    table = folder / "data.csv"
    try:
        rows = list(csv.DictReader(io.StringIO(table.read_text(encoding="utf-8-sig"))))
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"Hannover source {table}: cannot read it ({err}); `make study-data` imports it again") from err
    needed = {"patient_id", "image_id", "projection", "admission_offset"}
    lacking = sorted(needed - set(rows[0] if rows else ()))
    if not rows or lacking:
        raise UserError(f"Hannover source {table}: no rows, or no column {', '.join(lacking)}")
    films, left_out = [], {"not frontal": [], "before admission or no admission offset": []}
    for row in sorted(rows, key=lambda r: r["image_id"]):
        member = f"png/{row['image_id']}.png"
        if row["projection"].strip().lower() not in FRONTAL:
            left_out["not frontal"].append(member)
        elif (
            not re.fullmatch(r"-?\d+", row["admission_offset"].strip())
            or int(row["admission_offset"]) > MAX_ADMISSION_OFFSET
        ):
            left_out["before admission or no admission offset"].append(member)
        elif not (folder / member).is_file():
            raise UserError(f"Hannover source {folder}: data.csv lists {row['image_id']}, but {member} is not there")
        else:
            data = (folder / member).read_bytes()
            films.append(_write(out, "hannover", member, data, "COVID-19", f"hannover:{row['patient_id']}"))
    return films, left_out


def _write(out: Path, dataset: str, member: str, data: bytes, label: str, patient: str) -> Film:
    path = f"images/{dataset}/{member}"
    target = out / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return Film(path, dataset, member, label, patient, hashlib.sha256(data).hexdigest())
