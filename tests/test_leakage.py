"""Planted leaks (a re-encoded, resized copy; an exact copy; a shared patient) are found and reported."""

import json
import shutil

import cv2

from helpers import REPORT, manifest_tree, preprocess


def plant_leaks(data):
    """m0 (train) resized and re-encoded as JPEG into test; m1 (train) copied into val; m12 (test) given
    m0's patient."""
    img = cv2.imread(str(data / "img/m0.png"), cv2.IMREAD_GRAYSCALE)
    small = cv2.resize(img, (img.shape[1] * 4 // 5, img.shape[0] * 4 // 5), interpolation=cv2.INTER_AREA)  # >= 32 px
    cv2.imwrite(str(data / "img/dup.jpg"), small, [cv2.IMWRITE_JPEG_QUALITY, 80])
    shutil.copyfile(data / "img/m1.png", data / "img/copy.png")
    lines = (data / "manifest.csv").read_text().splitlines()
    rows = [lines[0] + ",patient_id"] + [f"{line},p{0 if i == 12 else i}" for i, line in enumerate(lines[1:])]
    rows += ["img/dup.jpg,normal,test,p90", "img/copy.png,bacteria,val,p91"]
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")


def test_planted_duplicates_and_shared_patient_are_reported(tmp_path, monkeypatch, capsys):
    plant_leaks(manifest_tree(tmp_path / "data"))
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 0 and err.startswith("WARNING: LEAKAGE BETWEEN SPLITS: ")
    leaks = json.loads((tmp_path / REPORT).read_text())["leakage"]
    pairs = leaks["pairs"]
    assert pairs["train/test"]["shared_patients"] == ["p0"]
    [[a, b, distance]] = pairs["train/test"]["near_duplicates"]
    assert (a, b) == ("img/m0.png", "img/dup.jpg") and distance <= leaks["near_duplicate_distance"]
    assert pairs["train/val"]["exact_duplicates"] == [["img/m1.png", "img/copy.png"]]
    assert pairs["train/val"]["near_duplicates"] == [] and pairs["val/test"] == {
        "shared_patients": [],
        "exact_duplicates": [],
        "near_duplicates": [],
    }
    assert (
        "train/val: 1 exact duplicate(s)" in leaks["summary"]
        and "train/test: 1 shared patient(s), 1 near" in leaks["summary"]
    )


def test_leak_fails_the_stage_when_on_leak_is_error(tmp_path, monkeypatch, capsys):
    plant_leaks(manifest_tree(tmp_path / "data"))
    code, err = preprocess(tmp_path, monkeypatch, capsys, on_leak="error")
    assert code == 2 and err.startswith(
        "error: leakage between splits: train/val: 1 exact duplicate(s) (e.g. img/m1.png ~ img/copy.png)"
    )
    assert err.endswith("fix the splits or set data.on_leak: warn") and "\n" not in err
    assert not (tmp_path / REPORT).exists() and not (tmp_path / "cache").exists()


def test_clean_splits_report_no_leak(tmp_path, monkeypatch, capsys):
    manifest_tree(tmp_path / "data")
    assert preprocess(tmp_path, monkeypatch, capsys, on_leak="error") == (0, "")
    assert json.loads((tmp_path / REPORT).read_text())["leakage"]["summary"] is None
