"""The second round of bad inputs (issue 11): each one planted in a temp dir is handled right or
refused in one line naming the file and the fix; never a traceback, never a silently wrong result.
(Decoding cases, such as bit depth, EXIF, sizes and headerless formats, are in test_formats.py.)"""

import json
import os
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from helpers import REPORT, ROOT, course_tree, data_params, manifest_tree, merge, preprocess, stage_cmd, write_xray
from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.dataset import DAMAGED, verify_cache
from stages.lib.data.layouts import read_course_split, read_layout
from stages.lib.model.resume import fingerprint
from stages.lib.params.schema import Preprocess
from stages.preprocess import build_cache

P32 = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)
FIX = "rerun `dvc repro preprocess --force`"


def report() -> dict:
    return json.loads(Path(REPORT).read_text())


# --- folder names that differ only in case: nothing dropped -----------------------------------


def test_folders_differing_only_in_case_are_all_read(tmp_path):
    for i, rel in enumerate(
        [
            "train/normal/a.png",
            "train/NORMAL/b.png",
            "Train/Normal/c.png",
            "train/covid/d.png",
            "train/COVID-19/e.png",
            "Train/virus/f.png",
            "train/bacteria/g.png",
        ]
    ):
        write_xray(tmp_path / rel, i)
    names = sorted(s.name for s in read_layout(tmp_path, "folders", STUDY_CLASSES)["train"])
    assert names == [
        "Train/Normal/c.png",
        "Train/virus/f.png",
        "train/COVID-19/e.png",
        "train/NORMAL/b.png",
        "train/bacteria/g.png",
        "train/covid/d.png",
        "train/normal/a.png",
    ]


def test_kaggle_reads_every_case_variant_and_every_covid_folder(tmp_path):
    for rel in [
        "chest_xray/train/NORMAL/IM-0001-0001.jpeg",
        "chest_xray/train/normal/IM-0002-0001.jpeg",
        "chest_xray/train/PNEUMONIA/person1_virus_1.jpeg",
        "chest_xray/Train/PNEUMONIA/person2_bacteria_1.jpeg",
        "covid/c1.png",
        "COVID-19/c2.png",
        "covid19/train/c3.png",
    ]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).touch()
    train = read_layout(tmp_path, "kaggle-pneumonia", STUDY_CLASSES)["train"]
    assert sorted((s.label, Path(s.name).name) for s in train) == [
        (0, "IM-0001-0001.jpeg"),
        (0, "IM-0002-0001.jpeg"),
        (1, "person2_bacteria_1.jpeg"),
        (2, "person1_virus_1.jpeg"),
        (3, "c1.png"),
        (3, "c2.png"),
        (3, "c3.png"),
    ]


# --- CSVs: repeated files, conflicting labels, labels exactly 0 or 1, separators ----------------

HEADER = "new_filename,normal,bacteria,virus,COVID-19\n"


@pytest.mark.parametrize("cell", ["0.4", "1.7", "0.9", "inf", "nan", "-1", "", "yes"])
def test_course_labels_must_be_exactly_0_or_1(tmp_path, cell):
    (tmp_path / "train_data.csv").write_text(HEADER + "a.png,1,0,0,0\n" + f"b.png,0,{cell},1,0\n")
    with pytest.raises(
        UserError,
        match=rf"train_data.csv:3: label columns must be 0 or 1, got bacteria = "
        rf"'{cell}' in the row for 'b.png'; fix the row",
    ):
        read_course_split(tmp_path, "train", STUDY_CLASSES)


def test_course_labels_written_as_floats_are_read(tmp_path):
    (tmp_path / "train_data.csv").write_text(HEADER + "a.png,0.0,0,1.0,0\n")
    assert [s.label for s in read_course_split(tmp_path, "train", STUDY_CLASSES)] == [2]


@pytest.mark.parametrize(
    "layout,name,sep,word",
    [
        ("course", "train_data.csv", ";", "semicolons"),
        ("manifest", "manifest.csv", ";", "semicolons"),
        ("manifest", "manifest.csv", "\t", "tabs"),
    ],
)
def test_a_csv_with_another_separator_is_refused_naming_it(tmp_path, layout, name, sep, word):
    csv_path = {"course": course_tree, "manifest": manifest_tree}[layout](tmp_path) / name
    csv_path.write_text(csv_path.read_text().replace(",", sep))
    with pytest.raises(
        UserError,
        match=rf"{name}: its columns are separated by {word}, not commas; save it as "
        "comma-separated CSV",
    ):
        read_layout(tmp_path, layout, STUDY_CLASSES)


def test_a_file_listed_twice_in_a_split_counts_once_and_is_reported(tmp_path, monkeypatch, capsys):
    data = course_tree(tmp_path / "data")
    first = (data / "train_data.csv").read_text().splitlines()[1]
    (data / "train_data.csv").write_text((data / "train_data.csv").read_text() + first + "\n")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 0 and err.startswith("note: duplicates within splits: train: 1 file(s) listed twice, kept once")
    assert sum(report()["counts"]["train"].values()) == 12
    assert report()["duplicates"]["same_file"] == {"train": [["data/train_data.csv:2", "data/train_data.csv:14"]]}


@pytest.mark.parametrize("where", ["same split", "two splits"])
def test_one_file_under_two_labels_is_refused_naming_both_lines(tmp_path, monkeypatch, capsys, where):
    data = manifest_tree(tmp_path / "data")
    split = "train" if where == "same split" else "test"
    (data / "manifest.csv").write_text((data / "manifest.csv").read_text() + f"img/m0.png,virus,{split}\n")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 2 and "\n" not in err
    assert err == (
        "error: data/manifest.csv:2 and data/manifest.csv:18 give data/img/m0.png two labels "
        "(normal, virus); keep only the right one"
    )
    assert not (tmp_path / "cache").exists()


def test_identical_pixels_in_a_split_are_reported_and_under_two_labels_refused(tmp_path, monkeypatch, capsys):
    data = manifest_tree(tmp_path / "data")
    shutil.copyfile(data / "img/m0.png", data / "img/copy.png")
    manifest = (data / "manifest.csv").read_text()
    (data / "manifest.csv").write_text(manifest + "img/copy.png,normal,train\n")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 0 and "train: 1 group(s) of files with identical pixels" in err
    assert report()["duplicates"]["same_pixels"] == {"train": [["img/m0.png", "img/copy.png"]]}

    (data / "manifest.csv").write_text(manifest + "img/copy.png,bacteria,train\n")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 2 and err == (
        "error: train image 'img/m0.png' (normal) and train image 'img/copy.png' "
        "(bacteria) hold identical pixels under two labels; remove the wrong one"
    )


# --- no split a later stage needs may end empty ---------------------------------------------


def test_a_split_emptied_by_skipped_files_is_refused_naming_it(tmp_path, monkeypatch, capsys):
    data = course_tree(tmp_path / "data")
    assert preprocess(tmp_path, monkeypatch, capsys)[0] == 0
    before = {p: p.read_bytes() for p in [tmp_path / REPORT, *sorted((tmp_path / "cache").iterdir())]}
    for image in (data / "test_images").iterdir():
        image.write_text("not an image")
    code, err = preprocess(tmp_path, monkeypatch, capsys, on_bad_image="skip")
    assert code == 2 and err == (
        "error: data: the test split has no images after skipping 4 bad file(s), and later stages need it; "
        "fix or add its images, or remove the test split so preprocess draws it from train"
    )
    assert {p: p.read_bytes() for p in before} == before


def test_an_empty_val_is_refused_when_min_val_allows_it(tmp_path, monkeypatch, capsys):
    data = course_tree(tmp_path / "data")
    (data / "val_data.csv").unlink()
    code, err = preprocess(tmp_path, monkeypatch, capsys, min_val=0)
    assert code == 2 and err.startswith("error: data: the val split has no images, and later stages need it")


# --- the data report says how each film was scaled ---------------------------------------------


def test_the_report_says_which_bit_depth_scaled_each_class(tmp_path, monkeypatch, capsys):
    data = course_tree(tmp_path / "data")
    film = data / "train_images" / "train1.png"  # a normal film, now a 12-bit export in a 16-bit PNG
    cv2.imwrite(str(film), (cv2.imread(str(film), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16))
    assert preprocess(tmp_path, monkeypatch, capsys)[0] == 0
    images = report()["images"]
    assert images["normal"]["scaled_by"] == {"file depth (8 bits)": 4, "image maximum (12 bits)": 1}
    assert images["normal"]["bit_depth"] == {"8": 4, "12": 1} and images["virus"]["bit_depth"] == {"8": 5}
    cached = np.load(tmp_path / "cache" / "train.npy")
    assert cached[0].max() > 200  # not the nearly black film the high byte gave


# --- symlink loops -----------------------------------------------------------------------------


def test_a_folder_symlink_loop_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    for i, name in enumerate(("normal", "bacteria", "virus", "covid") * 3):
        write_xray(tmp_path / "data" / ("train", "train", "test")[i // 4] / name / f"f{i}.png", 200 + i)
    os.symlink("..", tmp_path / "data/train/normal/up")
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    assert code == 2 and "\n" not in err
    assert err.startswith("error: data/train/normal/up/normal: a symlink loop (it leads back to ") and err.endswith(
        "data/train/normal); remove the link"
    )


@pytest.mark.parametrize("on_bad_image", ["error", "skip"])
def test_a_file_symlink_loop_is_a_bad_file(tmp_path, monkeypatch, capsys, on_bad_image):
    data = manifest_tree(tmp_path / "data")
    os.symlink("loop.png", data / "img/loop.png")
    (data / "manifest.csv").write_text((data / "manifest.csv").read_text() + "img/loop.png,normal,train\n")
    code, err = preprocess(tmp_path, monkeypatch, capsys, on_bad_image=on_bad_image)
    message = "data/manifest.csv:18: data/img/loop.png is a symlink loop; point the link at the image or remove it"
    if on_bad_image == "error":
        assert code == 2 and err == f"error: {message} (or set data.on_bad_image: skip to skip bad files)"
    else:
        assert code == 0 and report()["skipped"] == [{"file": "data/img/loop.png", "reason": message}]


def test_a_symlink_loop_in_a_class_folder_is_a_bad_file_not_a_silent_drop(tmp_path):
    write_xray(tmp_path / "train/normal/a.png", 1)
    os.symlink("b.png", tmp_path / "train/normal/b.png")
    assert [s.name for s in read_layout(tmp_path, "folders", STUDY_CLASSES)["train"]] == [
        "train/normal/a.png",
        "train/normal/b.png",
    ]


# --- cache integrity -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_cache(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    build_cache(
        course_tree(root / "data"), root / "cache", root / "report.json", P32, data_params(min_val=1), workers=1
    )
    return root / "cache"


def flip_a_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x10
    path.write_bytes(bytes(data))


def resave(path: Path, change) -> None:
    np.save(path, change(np.load(path)))


DAMAGE = {  # what is done to the cache: the message's middle part
    "truncated array": (
        lambda c: (c / "train.npy").write_bytes((c / "train.npy").read_bytes()[:-500]),
        r"train.npy: holds uint8 \[12, 32, 32\] in \d+ bytes, meta.json says uint8 \[12, 32, 32\]",
    ),
    "garbage array": (lambda c: (c / "val.npy").write_bytes(os.urandom(3000)), r"val.npy: not a valid npy file"),
    "zero-byte array": (lambda c: (c / "test.npy").write_bytes(b""), r"test.npy: not a valid npy file"),
    "fewer rows": (
        lambda c: resave(c / "train.npy", lambda a: a[:-1]),
        r"train.npy: holds uint8 \[11, 32, 32\] in \d+ bytes, meta.json says uint8 \[12, 32, 32\]",
    ),
    "extra rows": (
        lambda c: resave(c / "val.npy", lambda a: np.concatenate([a, a[:1]])),
        r"val.npy: holds uint8 \[5, 32, 32\]",
    ),
    "other size": (lambda c: resave(c / "test.npy", lambda a: a[:, :16, :16]), r"test.npy: holds uint8 \[4, 16, 16\]"),
    "other dtype": (lambda c: resave(c / "test.npy", lambda a: a.astype(np.float32)), r"test.npy: holds float32"),
    "flipped bit": (lambda c: flip_a_bit(c / "train.npy"), r"train.npy: its checksum differs from meta.json's"),
    "edited index": (
        lambda c: (c / "val.csv").write_text((c / "val.csv").read_text().replace(",normal", ",virus", 1)),
        r"val.csv: its checksum differs from meta.json's",
    ),
    "index row lost": (
        lambda c: (c / "val.csv").write_text("".join((c / "val.csv").read_text().splitlines(True)[:-1])),
        r"val.npy: 4 images but val.csv lists 3",
    ),
    "broken meta.json": (lambda c: (c / "meta.json").write_text('{"classes": ["normal", '), r"meta.json: unreadable"),
    "meta.json without checksums": (
        lambda c: (c / "meta.json").write_text(
            json.dumps({k: v for k, v in json.loads((c / "meta.json").read_text()).items() if k != "files"})
        ),
        r"meta.json: no valid files",
    ),
}


@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_cache_is_refused_in_one_line(tmp_path, built_cache, case):
    cache = shutil.copytree(built_cache, tmp_path / "cache")
    assert verify_cache(cache)["counts"]["train"]["normal"] == 3
    damage, message = DAMAGE[case]
    damage(cache)
    with pytest.raises(UserError, match=message) as err:
        verify_cache(cache)
    assert str(err.value).endswith(f"{DAMAGED}") and DAMAGED.endswith(FIX) and "\n" not in str(err.value)


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_train_and_evaluate_refuse_a_damaged_cache_before_building_a_model(
    tmp_path, built_cache, monkeypatch, capsys, stage
):
    import stages.evaluate
    import stages.train

    cache = shutil.copytree(built_cache, tmp_path / "cache")
    flip_a_bit(cache / "val.npy")
    params = merge(
        yaml.safe_load((ROOT / "params.yaml").read_text()), {"train": {"pretrained": False, "batch_size": 4}}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)

    def no_model(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(stages.train, "build_model", no_model)
    monkeypatch.setattr(stages.evaluate, "load_model", no_model)
    monkeypatch.setattr(sys, "argv", stage_cmd(stage, "resnet18")[2:])
    with pytest.raises(SystemExit) as done:
        getattr(stages, stage).main()
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err == (
        f"error: {Path('cache/val.npy')}: its checksum differs from meta.json's (changed or corrupted bytes); {DAMAGED}"
    )


def test_resume_fingerprint_hashes_exactly_the_modules_training_imports_in_both_pipelines(tmp_path):
    """An edit to a module the train stage imports invalidates a killed run's state; an edit to one it does
    not import (the ONNX exporter) keeps it resumable; the demo's ../stages deps read the same files."""
    from tools.code_deps import code_files

    shutil.copytree(ROOT / "stages", tmp_path / "stages", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "demo").mkdir()
    for pipeline in ("dvc.yaml", "demo/dvc.yaml"):
        shutil.copy(ROOT / pipeline, tmp_path / pipeline)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "meta.json").write_text("{}")
    imported = code_files("stages.train", tmp_path)
    assert "stages/lib/model/onnx_files.py" not in imported and "stages/lib/model/training.py" in imported

    def fingerprints():
        return [fingerprint("resnet18", {}, tmp_path / "cache", tmp_path / root) for root in ("", "demo")]

    before = fingerprints()
    assert before[0] == before[1]
    with open(tmp_path / "stages" / "lib" / "model" / "onnx_files.py", "a") as f:
        f.write("# an edit training never runs\n")
    assert fingerprints() == before
    with open(tmp_path / "stages" / "lib" / "model" / "training.py", "a") as f:
        f.write("# an edit training runs\n")
    after = fingerprints()
    assert after[0] == after[1] != before[0]


def test_resume_fingerprint_follows_meta_json_not_a_second_pass_over_the_arrays(tmp_path, built_cache):
    cache = shutil.copytree(built_cache, tmp_path / "cache")
    before = fingerprint("resnet18", {}, cache, ROOT)
    (cache / "train.npy").write_bytes(b"")  # verify_cache refuses this before a fingerprint is taken
    assert fingerprint("resnet18", {}, cache, ROOT) == before
    meta = json.loads((cache / "meta.json").read_text())
    meta["files"]["train.npy"]["sha256"] = "0" * 64  # other data -> other checksums in meta.json
    (cache / "meta.json").write_text(json.dumps(meta))
    assert fingerprint("resnet18", {}, cache, ROOT) != before
