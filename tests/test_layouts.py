"""Every layout gives the same samples; val/test splits are seeded, stratified and grouped by patient."""

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from helpers import course_tree, data_params, preprocess, write_xray
from stages.lib.core.errors import UserError
from stages.lib.core.names import SPLITS, STUDY_CLASSES, UNLABELED
from stages.lib.data import layouts
from stages.lib.data.dataset import read_cache_index
from stages.lib.data.layouts import Layout, detect_layout, kaggle_sample, read_layout
from stages.lib.data.records import Sample, parse_label, read_csv
from stages.lib.data.splits import ensure_splits
from stages.lib.params.schema import Preprocess
from stages.lib.results.evaluation import read_predictions
from stages.lib.results.metrics import classification_metrics
from stages.lib.results.subgroups import columns_to_score, read_metadata, subgroup_scores
from stages.preprocess import build_cache

P = Preprocess(img_size=32, center_crop_ratio=0.9, clahe_clip_limit=1.5, clahe_tile_grid=2)
FOLDER_NAMES = {"normal": "Normal", "bacteria": "BACTERIA", "virus": "virus", "COVID-19": "Covid-19"}


def rearrange(real: Path, root: Path, layout: str) -> Path:
    """Copy the real images into `layout` under root, using SOURCES.csv's original names and patients."""
    with open(real / "SOURCES.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    manifest = ["path,label,split,patient_id,source"]  # source: film metadata (subgroups)
    for r in rows:
        src = real / f"{r['split']}_images" / r["new_filename"]
        if layout == "folders":
            dest = root / r["split"] / FOLDER_NAMES[r["label"]] / r["new_filename"]
        elif layout == "kaggle-pneumonia" and r["label"] == "COVID-19":
            dest = root / "covid19" / r["split"] / r["new_filename"]
        elif layout == "kaggle-pneumonia":
            folder = "NORMAL" if r["label"] == "normal" else "PNEUMONIA"
            dest = root / "chest_xray" / r["split"] / folder / Path(r["original_path"]).name
        else:
            dest = root / "images" / r["new_filename"]
            manifest.append(f"images/{r['new_filename']},{r['label']},{r['split']},{r['patient_group']},{r['repo']}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    if layout == "manifest":
        (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    return root


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["folders", "kaggle-pneumonia", "manifest"])
def test_real_images_in_every_layout_give_the_course_counts(tmp_path, real_data, layout):
    data = rearrange(real_data, tmp_path / "data", layout)
    assert detect_layout(data) == layout
    report = build_cache(
        data,
        tmp_path / "cache",
        tmp_path / "report.json",
        P,
        data_params(),
        workers=2,
        shortcut_dir=tmp_path / "shortcut",
    )
    per_split = {"train": 40, "val": 10, "test": 10}
    assert report["layout"] == layout and report["splits_made"] == {}
    assert report["counts"] == {
        s: dict.fromkeys(("normal", "bacteria", "virus", "COVID-19"), n) for s, n in per_split.items()
    }
    assert report["leakage"]["summary"] is None  # the sample is split by patient; patients are known here
    pairs = report["leakage"]["pairs"]
    assert set(pairs) == {"train/val", "train/test", "val/test"} and not any(any(v.values()) for v in pairs.values())
    if layout == "manifest":
        per_source_table_on_real_films(real_data, tmp_path)


def per_source_table_on_real_films(real: Path, tmp_path: Path):
    """The manifest's `source` column (SOURCES.csv's repo) reaches the cache as film metadata, and the
    subgroup table scores each source of the real test films; the model is the shortcut audit's
    metadata-only forest (cheap, and the point: on these films the source alone carries the class)."""
    metadata = read_metadata(tmp_path / "cache", "test")
    assert set(metadata) == {"format", "bit_depth", "source"}
    _, labels, probs = read_predictions(tmp_path / "shortcut" / "test.csv", list(STUDY_CLASSES))
    overall = classification_metrics(labels, probs.argmax(1), STUDY_CLASSES)["macro_f1"]
    table = subgroup_scores(
        labels, probs, metadata, columns_to_score(metadata, ["source"], "test"), STUDY_CLASSES, overall, 200, 0
    )
    with open(real / "SOURCES.csv", newline="") as f:
        expected = Counter(r["repo"] for r in csv.DictReader(f) if r["split"] == "test")
    assert {v: g["n"] for v, g in table["source"].items()} == expected
    covid = table["source"]["ml-workgroup/covid-19-image-repository"]  # the study's COVID-19 films: one hospital
    assert covid["per_class_n"] == {"normal": 0, "bacteria": 0, "virus": 0, "COVID-19": 10}
    for column in ("format", "bit_depth", "source"):
        assert sum(g["n"] for g in table[column].values()) == 40
        for g in table[column].values():
            low, high = g["macro_f1_ci95"]
            assert low <= g["macro_f1"] <= high and g["below_overall"] == (high < overall)


def test_kaggle_file_names_give_class_and_patient(tmp_path):
    cases = {
        "chest_xray/train/PNEUMONIA/person1000_bacteria_2931.jpeg": ("bacteria", "person1000"),
        "chest_xray/train/PNEUMONIA/person12_virus_44.jpeg": ("virus", "person12"),
        "chest_xray/test/NORMAL/IM-0115-0001.jpeg": ("normal", "IM-0115"),
        "chest_xray/train/NORMAL/NORMAL2-IM-0923-0001.jpeg": ("normal", "IM-0923"),
    }
    for rel, (label, patient) in cases.items():
        s = kaggle_sample(tmp_path / rel, tmp_path, STUDY_CLASSES)
        assert (("normal", "bacteria", "virus", "COVID-19")[s.label], s.patient, s.name) == (label, patient, rel)
    with pytest.raises(UserError, match="person3_fungus_1.jpeg: a PNEUMONIA file name must contain"):
        kaggle_sample(tmp_path / "chest_xray/train/PNEUMONIA/person3_fungus_1.jpeg", tmp_path, STUDY_CLASSES)


def test_tiny_kaggle_val_is_resplit_from_train_by_patient_with_flat_covid_folder(tmp_path):
    root = tmp_path / "data"
    names = [f"NORMAL/IM-{i:04d}-000{k}.jpeg" for i in range(20) for k in (1, 2)]
    names += [f"PNEUMONIA/person{i}_{kind}_{k}.jpeg" for i in range(40) for k, kind in ((1, "bacteria"), (2, "virus"))]
    for name in names:
        (root / "chest_xray/train" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "chest_xray/train" / name).touch()
    for name in ("NORMAL/IM-9000-0001.jpeg", "PNEUMONIA/person900_virus_1.jpeg"):  # Kaggle's tiny val
        (root / "chest_xray/val" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "chest_xray/val" / name).touch()
    (root / "chest_xray/test/NORMAL").mkdir(parents=True)
    (root / "chest_xray/test/NORMAL/IM-8000-0001.jpeg").touch()
    (root / "COVID").mkdir()
    for i in range(20):
        (root / f"COVID/covid{i}.png").touch()

    given = read_layout(root, detect_layout(root), STUDY_CLASSES)
    assert [len(given[s]) for s in ("train", "val", "test")] == [len(names) + 20, 2, 1]
    splits, notes = ensure_splits(given, data_params(val_fraction=0.2, min_val=20))
    assert "given val had 2 images (< data.min_val 20)" in notes["val"]
    train_p = {s.patient or s.name for s in splits["train"]}
    val_p = {s.patient or s.name for s in splits["val"]}
    assert not train_p & val_p and len(splits["train"]) + len(splits["val"]) == len(names) + 22
    assert 0.15 < len(splits["val"]) / (len(names) + 22) < 0.25
    assert {s.label for s in splits["val"]} == {0, 1, 2, 3}  # stratified: every class in val
    again, _ = ensure_splits(given, data_params(val_fraction=0.2, min_val=20))
    assert [s.name for s in again["val"]] == [s.name for s in splits["val"]]  # seeded


def test_folder_names_match_classes_case_insensitively(tmp_path):
    for i, folder in enumerate(("NORMAL", "Bacteria", "VIRUS", "covid19", "COVID-19", "covid")):
        write_xray(tmp_path / "train" / folder / f"{i}.png", i)
    splits = read_layout(tmp_path, "folders", STUDY_CLASSES)
    assert sorted(s.label for s in splits["train"]) == [0, 1, 2, 3, 3, 3] and set(splits) == {"train"}
    write_xray(tmp_path / "train" / "cats" / "c.png", 9)
    with pytest.raises(UserError, match="cats: folder name 'cats' is not one of data.classes"):
        read_layout(tmp_path, "folders", STUDY_CLASSES)


def test_manifest_without_splits_gets_test_and_val_grouped_by_patient(tmp_path):
    rows = ["path,label,patient_id"] + [
        f"img{i}.png,{('normal', 'bacteria', 'virus', 'covid')[i % 4]},p{i // 3}" for i in range(120)
    ]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    splits, notes = ensure_splits(read_layout(tmp_path, "manifest", STUDY_CLASSES), data_params())
    assert set(notes) == {"val", "test"}
    groups = {k: {s.patient for s in v} for k, v in splits.items()}
    assert not (groups["train"] & groups["val"] or groups["train"] & groups["test"] or groups["val"] & groups["test"])
    assert sum(map(len, splits.values())) == 120 and all(len(splits[s]) >= 12 for s in ("val", "test"))


def test_hidden_label_test_set_is_cached_with_empty_labels(tmp_path):
    data = course_tree(tmp_path / "data")
    names = [line.split(",")[0] for line in (data / "test_data.csv").read_text().splitlines()[1:]]
    (data / "test_data.csv").write_text("new_filename\n" + "\n".join(names) + "\n")
    report = build_cache(data, tmp_path / "cache", tmp_path / "report.json", P, data_params(min_val=1), workers=1)
    assert report["counts"]["test"] == {"normal": 0, "bacteria": 0, "virus": 0, "COVID-19": 0, "unlabeled": 4}
    assert (tmp_path / "cache" / "test.csv").read_text().splitlines() == ["filename,label,format,bit_depth"] + [
        f"{n},,PNG,8" for n in names
    ]  # the built-in film metadata (subgroups) after the empty label
    cached, labels, classes = read_cache_index(tmp_path / "cache", "test")
    assert cached == names and labels.tolist() == [UNLABELED] * 4 and classes == list(STUDY_CLASSES)
    assert np.load(tmp_path / "cache" / "test.npy").shape == (4, 32, 32)
    assert "test" not in report["shortcut"] and "val" in report["shortcut"]


def test_folder_files_that_are_not_images_are_kept_for_refusal_but_os_clutter_is_not(tmp_path):
    write_xray(tmp_path / "train" / "normal" / "a.png", 1)
    for name in (".DS_Store", "Thumbs.db", "notes.txt"):
        (tmp_path / "train" / "normal" / name).write_text("x")
    assert [s.name for s in read_layout(tmp_path, "folders", STUDY_CLASSES)["train"]] == [
        "train/normal/a.png",
        "train/normal/notes.txt",
    ]


def read_labels_csv(data_dir: Path, classes) -> dict[str, list[Sample]]:
    """A layout the project does not have: labels.csv (file,label) beside the films, every film in train."""
    _, rows = read_csv(data_dir / "labels.csv")
    return {"train": [Sample(data_dir / r["file"], r["file"], parse_label(r["label"], classes)) for _, r in rows]}


LABELS_CSV = Layout("labels-csv", "labels.csv", lambda d: (d / "labels.csv").is_file(), read_labels_csv)


@pytest.mark.parametrize("named", ["auto", "labels-csv"])
def test_a_layout_added_as_one_record_of_the_registry_is_read_by_preprocess(tmp_path, monkeypatch, named):
    """docs/design.md: a layout is a reader and one record in stages/lib/data/layouts.py; nothing else changes."""
    monkeypatch.setattr(layouts, "LAYOUTS", (*layouts.LAYOUTS, LABELS_CSV))
    data, rows = tmp_path / "data", ["file,label"]
    for i in range(24):
        write_xray(data / "films" / f"f{i}.png", 300 + i)
        rows.append(f"films/f{i}.png,{STUDY_CLASSES[i % 4]}")
    (data / "labels.csv").write_text("\n".join(rows) + "\n")
    d = data_params(layout=named, min_val=1)
    report = build_cache(data, tmp_path / "cache", tmp_path / "report.json", P, d, workers=1)
    assert report["layout"] == "labels-csv" and set(report["splits_made"]) == {"val", "test"}
    cached = {}
    for split in SPLITS:
        names, labels, classes = read_cache_index(tmp_path / "cache", split)
        cached.update({n: classes[y] for n, y in zip(names, labels)})
    assert cached == {f"films/f{i}.png": STUDY_CLASSES[i % 4] for i in range(24)}


def test_an_unknown_data_layout_is_refused_first_in_one_line_naming_every_layout(tmp_path, monkeypatch, capsys):
    """Checked when preprocess starts (params cannot import the layouts): before the missing data folder."""
    monkeypatch.setattr(layouts, "LAYOUTS", (*layouts.LAYOUTS, LABELS_CSV))
    code, err = preprocess(tmp_path, monkeypatch, capsys, layout="labels_csv")
    known = ", ".join(layout.name for layout in layouts.LAYOUTS)
    assert (code, err) == (
        2,
        f"error: data.layout must be auto or one of {known}, got 'labels_csv'; fix it in params.yaml",
    )
    assert "labels-csv" in known and sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
