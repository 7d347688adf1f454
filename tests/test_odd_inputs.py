"""Issue 20, beyond decoding: odd file names round-trip through every CSV, a preprocess killed
with -9 leaves no worker and no staging folder behind, an old or edited checkpoint is refused
naming its key, patient ids that differ only by case and multi-frame files are reported."""

import copy
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from helpers import ROOT, SLOW_PREPROCESS, course_tree, data_params, gradient, run_predict, write_dicom, write_xray
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.core.staging import remove_stale
from stages.lib.data.dataset import read_cache_index, verify_cache
from stages.lib.params.schema import Preprocess
from stages.preprocess import build_cache

P32 = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)
ODD = ["a\rb.png", "new\nline.png", "com,ma.png", 'quo"te.png', "-dash.png"]


def folders_tree(root: Path, names: dict[str, list[str]]) -> Path:
    """train: 3 films per class; val and test: one per class; names[split] renames that split's films."""
    seed = 0
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        for c, cls in enumerate(STUDY_CLASSES):
            for k in range(n):
                seed += 1
                odd = names.get(split, [])
                name = odd[c * n + k] if c * n + k < len(odd) else f"f{seed}.png"
                write_xray(root / split / cls / name, seed)
    return root


# --- 6. odd names: the cache index and predict's CSV round-trip any name -----------------------


def test_any_file_name_round_trips_through_the_cache_index(tmp_path):
    data = folders_tree(tmp_path / "data", {"train": ODD})
    build_cache(data, tmp_path / "cache", tmp_path / "report.json", P32, data_params(min_val=1), workers=1)
    verify_cache(tmp_path / "cache")  # the index rows match the arrays
    names = read_cache_index(tmp_path / "cache", "train")[0]
    assert len(names) == 12 and {f"train/{STUDY_CLASSES[i // 3]}/{n}" for i, n in enumerate(ODD)} <= set(names)
    # the ordinary rows are written exactly as before (no quotes): only the row with a \r is quoted
    text = (tmp_path / "cache" / "train.csv").read_bytes().decode()
    assert '"train/normal/a\rb.png","normal",' in text and "\ntrain/virus/f7.png,virus," in text


def test_predict_writes_a_csv_that_reads_back_one_row_per_image(tmp_path, model_path, monkeypatch, capsys):  # noqa: F811
    images = tmp_path / "new"
    for i, name in enumerate(ODD):
        write_xray(images / name, i)
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 0, err
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["filename"] for r in rows) == sorted(ODD)


# --- 7. kill -9 during preprocess ----------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields: state, ppid, ...
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_preprocess_killed_with_9_leaves_no_worker_and_its_staging_is_removed_next_run(tmp_path):
    folders_tree(tmp_path / "data", {})  # 20 films, 0.3 s each on 2 workers: about 3 s of decoding
    proc = subprocess.Popen([sys.executable, "-c", SLOW_PREPROCESS, str(tmp_path)], cwd=ROOT)
    deadline, workers = time.monotonic() + 120, []
    while time.monotonic() < deadline and proc.poll() is None:
        workers = _children(proc.pid)
        if len(workers) >= 2 and list(tmp_path.glob(".cache.*/all.npy")):
            break
        time.sleep(0.05)
    assert proc.poll() is None and len(workers) >= 2, "preprocess ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = [w for w in workers if _alive(w)]
    for w in survivors:  # not left running when this test fails
        os.kill(w, signal.SIGKILL)
    assert not survivors, "pool workers outlived their killed parent"
    stale = sorted(p.name for p in tmp_path.glob(".cache.*"))
    assert any(not name.endswith(".lock") for name in stale)  # what the killed run left
    build_cache(tmp_path / "data", tmp_path / "cache", tmp_path / "report.json", P32, data_params(min_val=1), workers=1)
    assert list(tmp_path.glob(".cache.*")) == [] and (tmp_path / "cache" / "meta.json").is_file()


def test_a_staging_folder_in_use_is_not_removed(tmp_path):
    import fcntl

    (tmp_path / ".cache.live").mkdir()
    with open(tmp_path / ".cache.live.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert remove_stale(tmp_path / "cache") == []
    assert remove_stale(tmp_path / "cache") == [tmp_path / ".cache.live", tmp_path / ".cache.live.lock"]


# --- 8. old or edited checkpoints ------------------------------------------------------------------


def _checkpoint(tmp_path, spoil=None) -> Path:
    from stages.lib.model.networks import build_model

    meta = {"backbone": "resnet18", "classes": list(STUDY_CLASSES), "preprocess": P32.model_dump(), "dropout": 0.1}
    meta = copy.deepcopy(meta)
    if spoil:
        spoil(meta)
    path = tmp_path / "seed42.pt"
    torch.save({"state_dict": build_model("resnet18", 4, 0.1, pretrained=False).state_dict(), "meta": meta}, path)
    return path


@pytest.mark.parametrize(
    "spoil,key",
    [
        (lambda m: m["preprocess"].pop("img_size"), "preprocess.img_size: field required"),
        (lambda m: m.update(preprocess={}), "preprocess.img_size: field required"),
        (lambda m: m.update(dropout="0.1"), "dropout: input should be a valid number, got '0.1'"),
        (lambda m: m.pop("backbone"), "backbone: field required"),
        (
            lambda m: m["preprocess"].update(clahe_tile_grid=2.0),
            "preprocess.clahe_tile_grid: input should be a valid integer",
        ),
    ],
)
def test_a_checkpoint_missing_or_mistyping_what_the_model_needs_is_refused_naming_the_key(
    tmp_path, monkeypatch, capsys, spoil, key
):
    path = _checkpoint(tmp_path, spoil)
    write_xray(tmp_path / "img" / "a.png", 1)
    code, _, err = run_predict(
        ["--model", path, "--images", tmp_path / "img", "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err == (f"error: {path}: its metadata key {key}" + err.split(key, 1)[1])
    assert "retrain it (dvc repro --force train)" in err and "\n" not in err and not (tmp_path / "p.csv").exists()


def test_a_complete_old_checkpoint_runs_at_its_own_image_size(tmp_path):
    from stages.lib.model.inference import load_model

    model, meta = load_model(_checkpoint(tmp_path))  # only the four keys: no seed, epoch or provenance
    assert meta["preprocess"] == P32 and meta["preprocess"].img_size == 32


# --- 9. patient ids that differ only by case; 3. multi-frame files in the data report ------------------


def test_ids_differing_only_by_case_are_kept_apart_and_listed(tmp_path, monkeypatch, capsys):
    from helpers import preprocess

    data = course_tree(tmp_path / "data")
    for name, pid in (("train_images/train1.png", "P12"), ("test_images/test17.png", "p12")):  # listed films
        write_dicom(
            data / name, gradient(4095, np.uint16), "MONOCHROME2", 12, PatientID=pid
        )  # a DICOM under a .png name: read by its DICM magic
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    report = json.loads((tmp_path / "metrics/data_report.json").read_text())
    assert code == 0 and report["leakage"]["pairs"]["train/test"]["shared_patients"] == []
    assert report["patient_ids_differing_by_case"]["groups"] == [{"P12": ["train"], "p12": ["test"]}]
    assert "note: 1 patient id(s) spelled with different letter case, e.g. P12 / p12" in err


def test_a_multiframe_film_is_reported_on_screen_and_in_the_data_report(tmp_path, monkeypatch, capsys):
    from helpers import preprocess

    data = course_tree(tmp_path / "data")
    frames = np.stack([gradient(4095, np.uint16)] * 2)
    path = data / "train_images" / "train1.png"
    write_dicom(path, frames[0], "MONOCHROME2", 12)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 2, frames.tobytes()
    ds.save_as(path)
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    report = json.loads((tmp_path / "metrics/data_report.json").read_text())
    assert code == 0 and report["first_frame_only"]["files"] == [{"split": "train", "file": "train1.png", "frames": 2}]
    assert "note: 1 file(s) with several frames or pages: the first of each was used" in err


def test_multiframe_colour_dicom_is_refused_by_predict_in_one_line(tmp_path, model_path, monkeypatch, capsys):  # noqa: F811
    images = tmp_path / "new"
    images.mkdir()
    (images / "rgb2.dcm").write_bytes(Path(get_testdata_file("SC_rgb_rle_2frame.dcm")).read_bytes())
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err.startswith(f"error: {images / 'rgb2.dcm'}: colour DICOM (RGB); export it as grayscale")
    assert "\n" not in err


def test_predict_says_when_it_takes_the_first_page_of_a_tiff(tmp_path, model_path, monkeypatch, capsys):  # noqa: F811
    from PIL import Image

    images = tmp_path / "new"
    images.mkdir()
    pages = [Image.fromarray(gradient(255, np.uint8)), Image.fromarray(255 - gradient(255, np.uint8))]
    pages[0].save(images / "two.tif", save_all=True, append_images=pages[1:])
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", tmp_path / "p.csv", "--workers", "0"], monkeypatch, capsys
    )
    assert code == 0 and f"note: {images / 'two.tif'}: 2 frames or pages; the first was used" in err
