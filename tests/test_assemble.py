"""The study's data from its two public sources (`make study-data`), proven on tiny stand-ins with
the real archives' folder and file-name patterns: labels, frontal and post-admission Hannover films,
whole patients, exact duplicates dropped, licences, the same bytes twice, pins that refuse by name."""

import csv
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import ROOT, run
from stages.lib.core.errors import UserError
from stages.lib.core.files import umask
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.cache import build_cache
from stages.lib.data.layouts import detect_layout, read_layout
from stages.lib.params.schema import Assemble, Data, Preprocess
from stages.lib.report.summary import sources_lines
from stages.lib.study.assembly import assemble, cap
from stages.lib.study.sources import Film
from tools.pin_sources import pin

KERMANY, HANNOVER = "ChestXRay2017.zip", "covid-19-image-repository.tar.gz"
HANNOVER_ROOT = "covid-19-image-repository-ad7ab099b425f16e06bba22322336b7d6a732965"
DUPLICATE = "chest_xray/test/NORMAL/IM-0009-0001.jpeg"  # the same bytes as chest_xray/train/NORMAL/IM-0001-0001.jpeg


def film(seed: int, fmt: str = "JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 40), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, fmt)
    return buf.getvalue()


def kermany_members() -> dict[str, bytes]:
    """Six patients a class in train, two in test, as the Mendeley zip names them; macOS clutter."""
    members, seed = {}, 0
    for split, first, count in (("train", 1, 6), ("test", 7, 2)):
        for p in range(first, first + count):
            names = [
                f"NORMAL/IM-{p:04d}-0001.jpeg",
                f"NORMAL/NORMAL2-IM-{p + 100:04d}-0001.jpeg",
                f"PNEUMONIA/person{p}_bacteria_{p * 10}.jpeg",
                f"PNEUMONIA/person{p}_bacteria_{p * 10 + 1}.jpeg",
                f"PNEUMONIA/person{p + 50}_virus_{p * 10 + 2}.jpeg",
                f"PNEUMONIA/person{p + 50}_virus_{p * 10 + 3}.jpeg",
            ]
            for name in names:
                seed += 1
                members[f"chest_xray/{split}/{name}"] = film(seed)
    members[DUPLICATE] = members["chest_xray/train/NORMAL/IM-0001-0001.jpeg"]
    members["__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg"] = b"resource fork"
    members["chest_xray/train/.DS_Store"] = b"finder"
    return members


def hannover_rows() -> list[dict]:
    """data.csv as the repository has it: eight patients, AP and PA films on or before admission, plus
    one lateral film, one taken before admission and one without an offset."""
    rows = [
        {
            "patient_id": f"p{p:02d}",
            "image_id": f"{p:02d}{k}aaaaa",
            "projection": "ap" if k else "pa",
            "admission_offset": str(-k),
        }
        for p in range(8)
        for k in range(2)
    ]
    rows += [
        {"patient_id": "p00", "image_id": "lat00000", "projection": "lateral", "admission_offset": "-3"},
        {"patient_id": "p01", "image_id": "early000", "projection": "ap", "admission_offset": "4"},
        {"patient_id": "p02", "image_id": "nooff000", "projection": "ap", "admission_offset": ""},
    ]
    return rows


def write_kermany(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in kermany_members().items():
            z.writestr(name, data)


def write_hannover(path: Path, extra: bytes = b"") -> None:
    rows = hannover_rows()
    table = io.StringIO()
    writer = csv.DictWriter(
        table,
        ["patient_id", "image_id", "sex", "admission_offset", "modality", "projection"],
        extrasaction="ignore",
        lineterminator="\n",
    )
    writer.writeheader()
    writer.writerows(rows)
    files = {f"{HANNOVER_ROOT}/data.csv": table.getvalue().encode(), f"{HANNOVER_ROOT}/readme.md": b"# repo" + extra}
    files.update({f"{HANNOVER_ROOT}/png/{r['image_id']}.png": film(1000 + i, "PNG") for i, r in enumerate(rows)})
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sources(tmp_path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    write_kermany(folder / KERMANY)
    write_hannover(folder / HANNOVER)
    (folder / "SHA256SUMS").write_text(
        f"# pins\n{sha(folder / KERMANY)}  {KERMANY}\n{sha(folder / HANNOVER)}  {HANNOVER}\n"
    )
    return folder


def build(sources: Path, out: Path, params: Assemble = Assemble()) -> dict:
    return assemble(sources / KERMANY, sources / HANNOVER, sources / "SHA256SUMS", out, params)


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_assembled_folder_is_a_manifest_with_labels_whole_patients_licences_and_the_same_bytes_twice(
    sources, tmp_path
):
    summary = build(sources, tmp_path / "data")
    data = tmp_path / "data"
    assert detect_layout(data) == "manifest" and data.stat().st_mode & 0o777 == 0o777 & ~umask()
    splits = read_layout(data, "manifest", STUDY_CLASSES)
    assert set(splits) == {"train", "val", "test"}
    manifest = rows(data / "manifest.csv")
    assert all((data / r["path"]).is_file() for r in manifest)

    expected = {}  # the class each file name says
    for r in manifest:
        name = r["path"].rsplit("/", 1)[-1]
        expected[r["path"]] = (
            "COVID-19"
            if "/hannover/" in r["path"]
            else "bacteria"
            if "_bacteria_" in name
            else "virus"
            if "_virus_" in name
            else "normal"
        )
    assert {r["path"]: r["label"] for r in manifest} == expected
    assert {r["label"] for r in manifest if r["split"] == "test"} == set(STUDY_CLASSES)

    # No patient in two splits; ids from personN_ / IM-NNNN, and data.csv's patient_id.
    split_of_patient = {}
    for r in manifest:
        assert split_of_patient.setdefault(r["patient_id"], r["split"]) == r["split"], r["patient_id"]
    assert {r["patient_id"] for r in manifest if r["path"].endswith("person1_bacteria_10.jpeg")} == {"kermany:person1"}
    assert {r["patient_id"] for r in manifest if "/hannover/" in r["path"]} == {f"hannover:p{p:02d}" for p in range(8)}

    # Exact duplicate: one copy kept; Hannover: frontal films on or after admission only; clutter skipped.
    paths = {r["path"] for r in manifest}
    copies = {f"images/kermany/{DUPLICATE}", "images/kermany/chest_xray/train/NORMAL/IM-0001-0001.jpeg"}
    kept = copies & paths
    assert len(kept) == 1 and all((data / p).is_file() == (p in kept) for p in copies)
    assert summary["left_out"]["duplicates"] == 1
    assert summary["duplicates"][0]["dropped"] == sorted(copies - kept)
    assert not any(
        p.endswith(("lat00000.png", "early000.png", "nooff000.png")) or "__MACOSX" in p or ".DS_Store" in p
        for p in paths
    )
    assert summary["left_out"]["hannover"] == {"not frontal": 1, "before admission or no admission offset": 2}
    assert len(manifest) == 8 * 6 + 8 * 2  # the duplicate is the 49th Kermany film

    # Every film's origin and licence.
    origins = {r["path"]: r for r in rows(data / "SOURCES.csv")}
    assert set(origins) == paths
    for p, r in origins.items():
        kermany = "/kermany/" in p
        assert (r["dataset"], r["licence"], r["doi"]) == (
            ("kermany", "CC BY 4.0", "10.17632/rscbjbr9sj.2")
            if kermany
            else ("hannover", "CC BY 3.0", "10.6084/m9.figshare.12275009")
        )
        assert p == f"images/{r['dataset']}/{r['original']}" and r["sha256"] == sha(data / p)

    # preprocess reads it, finds no patient shared between splits, and its data report cites both datasets.
    report = build_cache(data, tmp_path / "cache", tmp_path / "report.json", Preprocess(img_size=32), Data(min_val=4))
    assert sum(sum(c.values()) for c in report["counts"].values()) == len(manifest) and not report["leakage"]["summary"]
    assert [(s["dataset"], s["licence"], s["doi"], s["films_kept"]) for s in report["sources"]] == [
        ("kermany", "CC BY 4.0", "10.17632/rscbjbr9sj.2", 48),
        ("hannover", "CC BY 3.0", "10.6084/m9.figshare.12275009", 16),
    ]
    assert all(s["citation"] for s in report["sources"])
    cited = "\n".join(sources_lines(report["sources"]))  # and the report stage's summary.md
    assert (
        "doi:10.17632/rscbjbr9sj.2 (CC BY 4.0): 48 films" in cited
        and "doi:10.6084/m9.figshare.12275009 (CC BY 3.0)" in cited
    )
    assert sources_lines([]) == []  # other data: no such section

    build(sources, tmp_path / "again")  # same sources and params: the same bytes, file for file
    assert tree(tmp_path / "again") == tree(data)
    build(sources, data)  # and again over its own earlier output
    assert tree(tmp_path / "again") == tree(data)


def test_a_changed_or_unpinned_source_is_refused_by_name_and_the_earlier_data_stay(sources, tmp_path):
    data = tmp_path / "data"
    build(sources, data)
    before = tree(data)
    write_hannover(sources / HANNOVER, extra=b" changed upstream")
    with pytest.raises(
        UserError,
        match=rf"^Hannover COVID-19 source \({re.escape(str(sources / HANNOVER))}\): sha256 "
        rf"[0-9a-f]{{64}} differs from the pinned",
    ):
        build(sources, data)
    sums = sources / "SHA256SUMS"
    sums.write_text(sums.read_text().replace(sha(sources / KERMANY), "UNKNOWN"))
    with pytest.raises(UserError, match=r"^Kermany 2018 source .* has no pinned sha256 yet .*make pin-sources"):
        build(sources, data)
    assert tree(data) == before

    pinned = pin(sums)  # the first downloader's step: UNKNOWN lines only; a known pin is never changed
    assert pinned == [KERMANY] and f"{sha(sources / KERMANY)}  {KERMANY}" in sums.read_text()
    with pytest.raises(UserError, match="Hannover COVID-19 source"):
        build(sources, data)


def test_a_data_folder_not_assembled_here_is_never_replaced(sources, tmp_path):
    own = tmp_path / "data"
    (own / "train" / "normal").mkdir(parents=True)
    (own / "train" / "normal" / "a.png").write_bytes(film(0, "PNG"))
    with pytest.raises(UserError, match="was not assembled from the sources"):
        build(sources, own)
    assert (own / "train" / "normal" / "a.png").is_file()


def test_caps_draw_whole_patients_with_the_seed():
    films = [
        Film(f"{c}/{p}/{k}", "kermany", "", c, f"{c}{p}", f"{c}{p}{k}")
        for c in STUDY_CLASSES
        for p in range(10)
        for k in range(1 + p % 3)
    ]
    caps = {"normal": 5, "bacteria": None, "virus": 1, "COVID-19": 100}
    kept = cap(films, caps, seed=0)
    count = {c: sum(f.label == c for f in kept) for c in STUDY_CLASSES}
    assert count["normal"] <= 5 and count["virus"] == 1
    assert count["bacteria"] == count["COVID-19"] == sum(1 + p % 3 for p in range(10))
    patients = {f.patient for f in kept}
    assert all(f in kept for f in films if f.patient in patients)  # a patient is kept whole or not at all
    assert cap(films, caps, seed=0) == kept and cap(films, caps, seed=1) != kept


def test_the_committed_imports_pin_versioned_urls_that_the_makefile_assembles():
    makefile = (ROOT / "Makefile").read_text()
    for name, url in (
        (KERMANY, r"https://data\.mendeley\.com/public-files/datasets/rscbjbr9sj/files/[0-9a-f-]{36}/"),
        (HANNOVER, r"https://github\.com/ml-workgroup/covid-19-image-repository/archive/[0-9a-f]{40}\.tar\.gz"),
    ):
        stage = yaml.safe_load((ROOT / "sources" / f"{name}.dvc").read_text())
        assert stage["frozen"] and stage["outs"][0]["path"] == name
        assert re.match(url, stage["deps"][0]["path"]), stage["deps"][0]["path"]
        assert f"sources/{name}" in makefile
        assert re.search(
            rf"^([0-9a-f]{{64}}|UNKNOWN)  {re.escape(name)}$", (ROOT / "sources" / "SHA256SUMS").read_text(), re.M
        )
    top = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o if isinstance(o, str) else next(iter(o)) for s in top.values() for o in s.get("do", s).get("outs", [])]
    assert "data" not in outs  # data/ is data.dvc's, whichever way it came: `dvc add data` never collides


@pytest.mark.slow
def test_make_study_data_imports_checks_assembles_and_tracks_data_with_dvc(tmp_path):
    """The documented command, on stand-ins imported with `dvc import-url --no-exec` from local paths:
    data.dvc tracks a manifest preprocess reads; a source changed upstream is refused by name."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    write_kermany(upstream / KERMANY)
    write_hannover(upstream / HANNOVER)
    proj = tmp_path / "proj"  # the files `make study-data` reads; no dvc.yaml, so each DVC call is quick
    proj.mkdir()
    for name in ("Makefile", "params.yaml"):
        shutil.copy2(ROOT / name, proj / name)
    shutil.copytree(ROOT / "sources", proj / "sources")
    run(["git", "init", "-q"], proj)
    run(["dvc", "init", "-q"], proj)
    for name in (KERMANY, HANNOVER):
        run(["dvc", "import-url", "-q", "--no-exec", "--force", str(upstream / name), f"sources/{name}"], proj)
    (proj / "sources" / "SHA256SUMS").write_text(
        f"{sha(upstream / KERMANY)}  {KERMANY}\n{sha(upstream / HANNOVER)}  {HANNOVER}\n"
    )
    make = ["make", "study-data", f"VENV={Path(sys.prefix)}", "STAMP="]
    run(make, proj)
    tracked = yaml.safe_load((proj / "data.dvc").read_text())["outs"][0]
    assert tracked["path"] == "data" and detect_layout(proj / "data") == "manifest"
    assert json.loads((proj / "data" / "assembly.json").read_text())["sources"]["hannover"]["url"] == str(
        upstream / HANNOVER
    )

    write_hannover(upstream / HANNOVER, extra=b" changed upstream")  # DVC's update takes it silently; the pin does not
    done = run(make, proj, check=False)
    assert done.returncode != 0
    assert re.search(
        r"error: Hannover COVID-19 source \(sources/covid-19-image-repository\.tar\.gz\): sha256 [0-9a-f]{64} "
        r"differs from the pinned",
        done.stderr,
    ), done.stderr
    assert yaml.safe_load((proj / "data.dvc").read_text())["outs"][0] == tracked
    assert (proj / "data" / "manifest.csv").is_file() and not list(proj.glob(".data.*"))  # as it was, no leftovers
