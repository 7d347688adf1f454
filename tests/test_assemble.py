"""The study's data from its two public sources (`make study-data`), proven on tiny stand-ins with
the real sources' folder and file-name patterns: labels, frontal and post-admission Hannover films,
whole patients, exact duplicates dropped, licences, the same bytes twice, pins that refuse by name
(Kermany's sha256; the Hannover imports' git commit)."""

import csv
import hashlib
import io
import json
import re
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import ROOT, run
from stages.assemble import assemble
from stages.lib.core.errors import UserError
from stages.lib.core.files import umask
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.layouts import detect_layout, read_layout
from stages.lib.params.schema import Assemble, Data, Preprocess
from stages.lib.report.summary import sources_lines
from stages.lib.study.assembly import cap
from stages.lib.study.sources import HANNOVER_IMPORTS, Film, import_origin
from stages.preprocess import build_cache
from tools.pin_sources import pin

KERMANY, HANNOVER = "ChestXRay2017.zip", "covid-19-image-repository"  # the zip; the folder of png/ and data.csv
COMMIT = "a9842c3b52767f048d67adf0d85f2c440b9b3d25"
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


def write_hannover(folder: Path) -> None:
    """The repository's png/ and data.csv, as `dvc import` (or a git checkout) leaves them."""
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
    (folder / "png").mkdir(parents=True, exist_ok=True)
    (folder / "data.csv").write_text(table.getvalue())
    for i, r in enumerate(rows):
        (folder / "png" / f"{r['image_id']}.png").write_bytes(film(1000 + i, "PNG"))


def write_imports(folder: Path, url: str, rev: str, rev_lock: str | None = None) -> None:
    """The .dvc files `dvc import --rev <rev> <url> <part>` writes for png/ and data.csv (DVC's format)."""
    for part in HANNOVER_IMPORTS:
        repo = {"url": url, "rev": rev, "rev_lock": rev if rev_lock is None else rev_lock}
        stage = {"frozen": True, "deps": [{"path": part, "repo": repo}], "outs": [{"hash": "md5", "path": part}]}
        (folder / f"{part}.dvc").write_text(yaml.safe_dump(stage, sort_keys=False))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def sources(tmp_path) -> Path:
    folder = tmp_path / "sources"
    folder.mkdir()
    write_kermany(folder / KERMANY)
    write_hannover(folder / HANNOVER)
    write_imports(folder / HANNOVER, "https://github.com/ml-workgroup/covid-19-image-repository", COMMIT)
    (folder / "SHA256SUMS").write_text(f"# pins\n{sha(folder / KERMANY)}  {KERMANY}\n")
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
        # a Hannover film: its repository and commit, as the .dvc files lock them; Kermany's zip has no commit
        assert (r["url"], r["commit"]) == (
            ("", "") if kermany else ("https://github.com/ml-workgroup/covid-19-image-repository", COMMIT)
        )
    assert "images/hannover/png/000aaaaa.png" in origins
    assert summary["sources"]["kermany"]["sha256"] == sha(sources / KERMANY)
    assert summary["sources"]["hannover"]["commit"] == COMMIT

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


def test_a_changed_or_unpinned_source_is_refused_in_one_line_and_the_earlier_data_stay(sources, tmp_path):
    data = tmp_path / "data"
    build(sources, data)
    before = tree(data)
    sums, zipped, folder = sources / "SHA256SUMS", sources / KERMANY, sources / HANNOVER

    def refused(pattern: str) -> str:
        with pytest.raises(UserError, match=pattern) as err:
            build(sources, data)
        assert "\n" not in str(err.value) and tree(data) == before
        return str(err.value)

    # Kermany's zip changed at its URL: what to check, and the command that re-pins it.
    with zipfile.ZipFile(zipped, "a") as z:
        z.writestr("chest_xray/train/NORMAL/IM-0999-0001.jpeg", film(999))
    message = refused(
        rf"^Kermany 2018 source \({re.escape(str(zipped))}\): sha256 {sha(zipped)} differs from the pin "
        rf"[0-9a-f]{{64}} in {re.escape(str(sums))}, refused; check the download \(5,856 films under chest_xray/"
    )
    assert "a second download gives the same sum" in message and "`make pin-sources` pins it" in message
    sums.write_text("# pins\n")
    refused(r"^Kermany 2018 source .*: sha256 [0-9a-f]{64} has no pin in .*make pin-sources")
    sums.write_text(f"UNKNOWN  {KERMANY}\n")  # a pin is a sha256, nothing else
    refused(rf"^{re.escape(str(sums))}:1: expected '<sha256>  <file>', got 'UNKNOWN  {KERMANY}'$")
    assert pin(sums, [zipped]) == [KERMANY] and sums.read_text() == f"{sha(zipped)}  {KERMANY}\n"

    # The Hannover imports: at one full commit, or refused (a branch or tag moves under `dvc update`).
    url = "https://github.com/ml-workgroup/covid-19-image-repository"
    write_imports(folder, url, "master", rev_lock=COMMIT)
    refused(
        rf"^Hannover COVID-19 source: {re.escape(str(folder / 'png.dvc'))} imports at rev master \(rev_lock {COMMIT}\)"
    )
    write_imports(folder, url, COMMIT[:7], rev_lock=COMMIT)
    refused(
        rf"imports at rev a9842c3 .*not at one full commit, which can move silently; `cd {re.escape(str(sources))} "
        r"&& dvc update --rev <40-hex commit> covid-19-image-repository/png\.dvc covid-19-image-repository/data\.csv\.dvc`$"
    )
    write_imports(folder, url, COMMIT)
    (folder / "data.csv.dvc").write_text((folder / "data.csv.dvc").read_text().replace(COMMIT, "f" * 40))
    refused(rf"^Hannover COVID-19 source: the imports in .* are at different commits \({COMMIT}, {'f' * 40}\)")
    (folder / "png.dvc").unlink()
    refused(r"png\.dvc is missing or is no `dvc import` of a git repository")
    write_imports(folder, url, COMMIT)
    (folder / "png" / "000aaaaa.png").unlink()
    refused(r"^Hannover source .*: data.csv lists 000aaaaa, but png/000aaaaa.png is not there$")


def test_pin_sources_pins_the_files_named_and_keeps_every_other_line(tmp_path):
    (tmp_path / "a.zip").write_bytes(b"a")
    (tmp_path / "b.zip").write_bytes(b"b")
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"# why\n{'0' * 64}  a.zip\n{'1' * 64}  b.zip\n")
    assert pin(sums, [tmp_path / "a.zip"]) == ["a.zip"]
    assert sums.read_text() == f"# why\n{'1' * 64}  b.zip\n{sha(tmp_path / 'a.zip')}  a.zip\n"
    with pytest.raises(UserError, match="c.zip missing: `make study-data` downloads it"):
        pin(sums, [tmp_path / "c.zip"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.zip").write_bytes(b"x")
    with pytest.raises(UserError, match=r"other/a.zip not beside .*SHA256SUMS"):
        pin(sums, [tmp_path / "other" / "a.zip"])


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


def test_the_committed_imports_pin_a_versioned_url_and_a_commit_and_no_pin_is_left_to_fill():
    sources = ROOT / "sources"
    kermany = yaml.safe_load((sources / f"{KERMANY}.dvc").read_text())  # `dvc import-url`, pinned by its sha256
    assert kermany["frozen"] and kermany["outs"][0]["path"] == KERMANY
    assert re.fullmatch(
        r"https://data\.mendeley\.com/public-files/datasets/rscbjbr9sj/files/[0-9a-f-]{36}/\w+",
        import_origin(sources / KERMANY)[0],
    )
    pins = [line for line in (sources / "SHA256SUMS").read_text().splitlines() if not line.startswith("#")]
    assert [re.sub("^[0-9a-f]{64}  ", "<sha256>  ", line) for line in pins] == [f"<sha256>  {KERMANY}"]  # no UNKNOWN
    for part in HANNOVER_IMPORTS:  # `dvc import` from the git repository: the commit is the pin
        stage = yaml.safe_load((sources / HANNOVER / f"{part}.dvc").read_text())
        assert stage["frozen"] and stage["outs"][0]["path"] == part and stage["deps"][0]["path"] == part
        assert stage["deps"][0]["repo"] == {
            "url": "https://github.com/ml-workgroup/covid-19-image-repository",
            "rev": COMMIT,  # release 2.0, the last commit to change png/ and data.csv
            "rev_lock": COMMIT,
        }
    # sources/ is a DVC project of its own (a git import's status clones its repository); the Makefile
    # updates every import there and assembles from them.
    assert (sources / ".dvc" / "config").is_file()
    makefile = (ROOT / "Makefile").read_text()
    assert 'cd sources && PATH="$(BIN):$$PATH" dvc update --recursive .' in makefile
    assert f"KERMANY := sources/{KERMANY}" in makefile and f"HANNOVER := sources/{HANNOVER}" in makefile
    top = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    outs = [o if isinstance(o, str) else next(iter(o)) for s in top.values() for o in s.get("do", s).get("outs", [])]
    assert "data" not in outs  # data/ is data.dvc's, whichever way it came: `dvc add data` never collides


def git_commit(repo: Path, message: str, *flags: str) -> str:
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", *flags, "-m", message], repo)
    return run(["git", "rev-parse", "HEAD"], repo).stdout.strip()


def set_rev(folder: Path, commit: str) -> None:
    """What `dvc update --rev <commit>` writes into each import (the test has no second download to wait for)."""
    for part in HANNOVER_IMPORTS:
        stage = yaml.safe_load((folder / f"{part}.dvc").read_text())
        stage["deps"][0]["repo"].update(rev=commit, rev_lock=commit)
        (folder / f"{part}.dvc").write_text(yaml.safe_dump(stage, sort_keys=False))


@pytest.mark.slow
def test_make_study_data_imports_at_the_pinned_commit_checks_assembles_and_tracks_data_with_dvc(tmp_path):
    """The documented command, offline: a local git repository stands in for GitHub (`dvc import`), a
    local zip for Mendeley (`dvc import-url`). data.dvc tracks a manifest preprocess reads; the commit
    in the .dvc files decides data/; an upstream edit never comes in silently; a changed zip is refused."""
    upstream = tmp_path / "upstream"  # GitHub's stand-in: png/ and data.csv as plain git files
    write_hannover(upstream)
    run(["git", "init", "-q"], upstream)
    first = git_commit(upstream, "data upload")
    write_kermany(tmp_path / KERMANY)
    proj = tmp_path / "proj"  # the files `make study-data` reads; no dvc.yaml, so each DVC call is quick
    proj.mkdir()
    for name in ("Makefile", "params.yaml"):
        shutil.copy2(ROOT / name, proj / name)
    shutil.copytree(ROOT / "sources", proj / "sources", ignore=shutil.ignore_patterns("tmp", "cache"))
    run(["git", "init", "-q"], proj)
    run(["dvc", "init", "-q"], proj)
    src = proj / "sources"
    run(["dvc", "import-url", "-q", "--no-exec", "--force", str(tmp_path / KERMANY), KERMANY], src)
    for part in HANNOVER_IMPORTS:
        run(
            [
                "dvc",
                "import",
                "-q",
                "--no-exec",
                "--force",
                "--rev",
                first,
                str(upstream),
                part,
                "-o",
                f"{HANNOVER}/{part}",
            ],
            src,
        )
    (src / "SHA256SUMS").write_text(f"{sha(tmp_path / KERMANY)}  {KERMANY}\n")
    make = ["make", "study-data", f"VENV={Path(sys.prefix)}", "STAMP="]
    data = proj / "data"
    run(make, proj)
    tracked = yaml.safe_load((proj / "data.dvc").read_text())["outs"][0]
    assert tracked["path"] == "data" and detect_layout(data) == "manifest"
    hannover = json.loads((data / "assembly.json").read_text())["sources"]["hannover"]
    assert (hannover["url"], hannover["commit"], hannover["films_kept"]) == (str(upstream), first, 16)
    assert yaml.safe_load((src / HANNOVER / "png.dvc").read_text())["deps"][0]["repo"]["rev_lock"] == first
    before = tree(data)

    # Upstream edits a film in a new commit on its branch: pinned at `first`, nothing of it comes in.
    edited = f"png/{hannover_rows()[0]['image_id']}.png"
    (upstream / edited).write_bytes(film(99, "PNG"))
    second = git_commit(upstream, "a film edited")
    run(make, proj)
    assert tree(data) == before and yaml.safe_load((proj / "data.dvc").read_text())["outs"][0] == tracked

    # A different commit in the .dvc files: a different data/, by exactly that film.
    set_rev(src / HANNOVER, second)
    run(make, proj)
    after = tree(data)
    assert after[f"images/hannover/{edited}"] == film(99, "PNG") != before[f"images/hannover/{edited}"]
    changed = {k for k in after.keys() | before.keys() if after.get(k) != before.get(k)}
    assert changed == {f"images/hannover/{edited}", "SOURCES.csv", "assembly.json"}  # its sha256, the commit
    assert yaml.safe_load((proj / "data.dvc").read_text())["outs"][0]["md5"] != tracked["md5"]

    # The pinned commit's content edited upstream, which rewrites history (amend, then gc): no commit
    # holds those bytes any more, so the import fails loudly, naming the commit; data/ stays.
    (upstream / edited).write_bytes(film(98, "PNG"))
    git_commit(upstream, "a film edited again", "--amend")
    run(["git", "reflog", "expire", "--expire=now", "--all"], upstream)
    run(["git", "gc", "-q", "--prune=now"], upstream)
    done = run(make, proj, check=False)
    assert done.returncode != 0 and f"unknown Git revision '{second}'" in done.stderr, done.stderr
    assert tree(data) == after

    # Kermany's zip changed at its URL: DVC's update takes it silently; the pin refuses it in one line.
    set_rev(src / HANNOVER, first)
    with zipfile.ZipFile(tmp_path / KERMANY, "a") as z:
        z.writestr("chest_xray/train/NORMAL/IM-0999-0001.jpeg", film(999))
    done = run(make, proj, check=False)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and len(errors) == 1, done.stderr
    assert re.match(
        r"error: Kermany 2018 source \(sources/ChestXRay2017\.zip\): sha256 [0-9a-f]{64} differs from the pin .*"
        r"check the download .*`make pin-sources` pins it",
        errors[0],
    ), errors[0]
    assert tree(data) == after and not list(proj.glob(".data.*"))  # as it was, no leftovers
