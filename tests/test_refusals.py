"""Bad input is refused with one line naming the file and the fix, exit code 2, outputs intact."""

import json
import os
import re
from pathlib import Path

import pytest

from helpers import REPORT, course_tree, manifest_tree, preprocess, write_xray


def folders_tree(root: Path) -> Path:
    for i, name in enumerate(("normal", "bacteria", "virus", "covid") * 3):
        write_xray(root / ("train", "train", "test")[i // 4] / name / f"f{i}.png", 200 + i)
    return root


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + line + "\n")


def replace_line(path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new, 1))


def symlink_out(data: Path) -> None:
    write_xray(data.parent / "outside.png", 7)
    os.symlink(data.parent / "outside.png", data / "img" / "link.png")
    append(data / "manifest.csv", "img/link.png,normal,train")


CASES = {  # name: (layout, how to break it, what the message must say)
    "missing file": (
        "manifest",
        lambda d: append(d / "manifest.csv", "img/gone.png,normal,train"),
        r"manifest.csv:18: image \S*gone.png not found; fix the path or add the image",
    ),
    "truncated image": (
        "course",
        lambda d: (d / "train_images/train1.png").write_bytes((d / "train_images/train1.png").read_bytes()[:200]),
        r"train1.png: a PNG file that cannot be decoded",
    ),
    "non-image": (
        "course",
        lambda d: (d / "train_images/train2.png").write_text("name,age\nann,3\n"),
        r"train2.png: not a readable image \(PNG, JPEG, BMP, TIFF or DICOM\); replace or remove it",
    ),
    "non-image in a class folder": (
        "folders",
        lambda d: (d / "train/virus/notes.txt").write_text("to do"),
        r"train/virus/notes.txt: not a readable image \(PNG, JPEG, BMP, TIFF or DICOM\); replace or remove it",
    ),
    "bad label": (
        "manifest",
        lambda d: append(d / "manifest.csv", "img/m0.png,pneumonia,train"),
        r"manifest.csv:18: label 'pneumonia' of 'img/m0.png' is not one of data.classes \(normal, bacteria",
    ),
    "bad one-hot": (
        "course",
        lambda d: replace_line(d / "val_data.csv", ",1,0,0,0", ",1,1,0,0"),
        r"val_data.csv:2: row for 'val13.png' must have exactly one 1",
    ),
    "zero one-hot": (
        "course",
        lambda d: replace_line(d / "val_data.csv", ",1,0,0,0", ",0,0,0,0"),
        r"val_data.csv:2: row for 'val13.png' must have exactly one 1",
    ),
    "wrong course columns": (
        "course",
        lambda d: replace_line(d / "train_data.csv", ",COVID-19", ",covid"),
        r"train_data.csv: missing column\(s\) COVID-19; expected header",
    ),
    "wrong manifest columns": (
        "manifest",
        lambda d: replace_line(d / "manifest.csv", "path,label", "file,class"),
        r"manifest.csv: columns file,class,split; expected path,label",
    ),
    "not a CSV": (
        "course",
        lambda d: (d / "val_data.csv").write_bytes(b"\xff\xfe\x00 binary \x81\x82"),
        r"val_data.csv: not a UTF-8 CSV file \(UnicodeDecodeError\); save it as UTF-8 CSV",
    ),
    "dot-dot path": (
        "manifest",
        lambda d: append(d / "manifest.csv", "../outside.png,normal,train"),
        r"manifest.csv:18: '../outside.png' escapes the data folder",
    ),
    "absolute path": (
        "manifest",
        lambda d: append(d / "manifest.csv", f"{d / 'img/m0.png'},normal,train"),
        r"manifest.csv:18: '/\S*m0.png' escapes the data folder",
    ),
    "symlink outside": ("manifest", symlink_out, r"manifest.csv:18: \S*link.png resolves to \S*outside.png, outside"),
    "pixel limit": ("course", lambda d: None, r"train1.png: 40x48 = 1920 pixels exceeds data.max_pixels \(1000\)"),
    "class without training images": (
        "course",
        lambda d: (d / "train_data.csv").write_text(
            "\n".join(row for row in (d / "train_data.csv").read_text().splitlines() if not row.endswith(",1")) + "\n"
        ),
        r"data: no training image of class 'COVID-19'; every class needs some \(add images of it to the training "
        r"split, or remove it from data.classes\)",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_refusal_names_the_file_exits_2_and_keeps_earlier_outputs(tmp_path, monkeypatch, capsys, case):
    layout, spoil, message = CASES[case]
    data = {"course": course_tree, "manifest": manifest_tree, "folders": folders_tree}[layout](tmp_path / "data")
    assert preprocess(tmp_path, monkeypatch, capsys) == (0, "")
    before = {p: p.read_bytes() for p in [tmp_path / REPORT, *sorted((tmp_path / "cache").iterdir())]}

    spoil(data)
    code, err = preprocess(tmp_path, monkeypatch, capsys, **({"max_pixels": 1000} if case == "pixel limit" else {}))
    assert code == 2 and "\n" not in err and err.startswith("error: ")
    assert re.search(message, err), err
    after = {p: p.read_bytes() for p in [tmp_path / REPORT, *sorted((tmp_path / "cache").iterdir())]}
    assert after == before


def test_skip_mode_skips_every_bad_file_and_lists_it(tmp_path, monkeypatch, capsys):
    data = manifest_tree(tmp_path / "data")
    append(data / "manifest.csv", "img/gone.png,normal,train")
    (data / "img/m1.png").write_bytes((data / "img/m1.png").read_bytes()[:100])
    (data / "img/m6.png").write_text("not an image")
    code, err = preprocess(tmp_path, monkeypatch, capsys, on_bad_image="skip")
    report = json.loads((tmp_path / REPORT).read_text())
    assert code == 0
    assert [(Path(s["file"]).name, s["reason"].split("; ")[0].split(": ", 1)[-1]) for s in report["skipped"]] == [
        ("gone.png", "image data/img/gone.png not found"),
        ("m1.png", "a PNG file that cannot be decoded (corrupt or truncated)"),
        ("m6.png", "not a readable image (PNG, JPEG, BMP, TIFF or DICOM)"),
    ]
    assert report["counts"]["train"] == {"normal": 2, "bacteria": 1, "virus": 1, "COVID-19": 2}


def test_bad_file_fails_by_default_and_says_how_to_skip(tmp_path, monkeypatch, capsys):
    data = course_tree(tmp_path / "data")
    (data / "test_images/test17.png").write_text("oops")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 2 and err.endswith(
        "test17.png: not a readable image (PNG, JPEG, BMP, TIFF or DICOM); replace or remove it "
        "(or set data.on_bad_image: skip to skip bad files)"
    )
    assert not (tmp_path / "cache").exists() and not (tmp_path / REPORT).exists()
