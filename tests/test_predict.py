"""`stages.predict` (`cxr4-predict`): folders with subfolders and CSV lists in, batches streamed through
the model, bad files refused (or skipped and listed) by name, the CSV replaced whole or not at all.
Its probabilities equal evaluate's: tests/test_pipeline.py, on the demo run."""

import os

import numpy as np
import pytest
import torch

from helpers import HEADER, P32, run_predict, write_xray
from stages.lib.core.names import STUDY_CLASSES
from stages.lib.data.formats import load_gray
from stages.lib.data.transforms import preprocess_image, preprocess_transform, to_model_input


def read_rows(path) -> dict[str, np.ndarray]:
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER
    return {r.split(",")[0]: np.array(r.split(",")[2:], float) for r in lines[1:]}


def expected_probs(model, image) -> np.ndarray:
    """One image through the model by hand: decoded, preprocessed, normalised as the pipeline does."""
    x = torch.from_numpy(preprocess_image(load_gray(image)[0], preprocess_transform(P32)))[None, None]
    with torch.no_grad():
        return torch.softmax(model.eval()(to_model_input(x, "cpu")), 1)[0].numpy()


def test_a_folder_is_read_with_its_subfolders_and_rows_named_by_their_path(tmp_path, model_path, monkeypatch, capsys):
    images = tmp_path / "new"
    for i, rel in enumerate(["b.png", "a/x.png", "a/deeper/y.png"]):
        write_xray(images / rel, i)
    write_xray(images / ".hidden.png", 9)  # dot files and OS clutter are left out, as preprocess leaves them
    (images / "Thumbs.db").write_bytes(b"\0")
    for _ in range(2):  # the CSV may sit among the images: a second run does not read the first one's
        code, out, _ = run_predict(
            ["--model", model_path, "--images", images, "--out", images / "p.csv"], monkeypatch, capsys
        )
        assert code == 0 and out.strip() == f"3 images classified with {model_path} -> {images / 'p.csv'}"
    rows = read_rows(images / "p.csv")
    assert list(rows) == ["a/deeper/y.png", "a/x.png", "b.png"]
    from stages.lib.model.inference import load_model

    model, _ = load_model(model_path)
    for name, probs in rows.items():
        np.testing.assert_allclose(probs, expected_probs(model, images / name), atol=2e-6)


def test_a_csv_list_in_its_order_relative_to_its_folder(tmp_path, model_path, monkeypatch, capsys):
    write_xray(tmp_path / "lists" / "imgs" / "r.png", 1)
    absolute = write_xray(tmp_path / "elsewhere" / "s.png", 2)
    listing = tmp_path / "lists" / "new.csv"
    listing.write_text(f"id,path\n7,{absolute}\n8,imgs/r.png\n")  # other columns are ignored
    code, _, _ = run_predict(
        ["--model", model_path, "--images", listing, "--out", tmp_path / "p.csv", "--submission"], monkeypatch, capsys
    )
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert code == 0 and lines[0] == "new_filename,normal,bacteria,virus,COVID-19"
    assert [line.split(",")[0] for line in lines[1:]] == [str(absolute), "imgs/r.png"]
    assert all(sorted(line.split(",")[1:]) == ["0", "0", "0", "1"] for line in lines[1:])


@pytest.mark.parametrize(
    "text, message",
    [
        ("file\nimgs/r.png\n", "{csv}: no 'path' column (columns: file); put the image paths in a column named path"),
        ("path\n\n", "{csv} holds no image files; nothing to predict"),
        ("path,id\n,3\n", "{csv} line 2: empty path; fill it in or remove the row"),
        (
            "path;id\nimgs/r.png;3\n",
            "{csv}: its columns are separated by semicolons, not commas; save it as comma-separated CSV",
        ),
        (
            "path\nimgs/gone.png\n",
            "{csv} line 2: {dir}/imgs/gone.png: not found (or a broken or looping link); fix the "
            "path or remove it (or pass --on-bad-image skip to skip bad files)",
        ),
    ],
)
def test_a_bad_csv_list_is_refused_in_one_line(tmp_path, model_path, monkeypatch, capsys, text, message):
    listing = tmp_path / "new.csv"
    listing.write_text(text)
    code, _, err = run_predict(
        ["--model", model_path, "--images", listing, "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err == "error: " + message.format(csv=listing, dir=tmp_path)
    assert not (tmp_path / "p.csv").exists()


def test_images_stream_through_the_model_a_batch_at_a_time(tmp_path, model_path, monkeypatch):
    """Decoding and classifying interleave batch by batch: at no point are all images in memory."""
    import stages.lib.model.runners
    from stages.lib.data.image_files import DecodedImages
    from stages.predict import predict_images

    for i in range(5):
        write_xray(tmp_path / "new" / f"{i}.png", i)
    events = []
    decode, classify = DecodedImages.__getitem__, stages.lib.model.runners.predict
    monkeypatch.setattr(DecodedImages, "__getitem__", lambda self, i: events.append(f"decode {i}") or decode(self, i))
    monkeypatch.setattr(
        stages.lib.model.runners,
        "predict",
        lambda model, batches, *a, **k: (
            events.append(f"classify {len(batches[0][0])}") or classify(model, batches, *a, **k)
        ),
    )
    done, skipped, fit = predict_images(str(model_path), tmp_path / "new", tmp_path / "p.csv", batch_size=2, workers=0)
    assert (done, skipped, fit) == (5, [], None)
    assert events == [
        "decode 0",
        "decode 1",
        "classify 2",
        "decode 2",
        "decode 3",
        "classify 2",
        "decode 4",
        "classify 1",
    ]
    streamed = read_rows(tmp_path / "p.csv")

    # Worker processes decode ahead in the same order: the same rows.
    predict_images(str(model_path), tmp_path / "new", tmp_path / "w.csv", batch_size=2, workers=1)
    assert (tmp_path / "w.csv").read_text() == (tmp_path / "p.csv").read_text() and len(streamed) == 5


def test_a_bad_file_is_refused_by_name_and_the_earlier_csv_kept_whole(tmp_path, model_path, monkeypatch, capsys):
    """By default predict stops at a file it cannot read, as preprocess does: a CSV silently short of a
    row would be a wrong answer. The refusal comes after a first batch was written to the temp file."""
    images = tmp_path / "new"
    write_xray(images / "a.png", 1)
    write_xray(images / "b.png", 2)
    (images / "c.txt").write_text("not an image")
    out = tmp_path / "p.csv"
    out.write_text("earlier,results\n")
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", out, "--batch-size", "2"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        f"error: {images}/c.txt: not a readable image (PNG, JPEG, BMP, TIFF or DICOM); "
        "replace or remove it (or pass --on-bad-image skip to skip bad files)"
    )
    assert out.read_text() == "earlier,results\n" and sorted(os.listdir(tmp_path)) == ["new", "p.csv"]

    code, stdout, err = run_predict(
        ["--model", model_path, "--images", images, "--out", out, "--on-bad-image", "skip"], monkeypatch, capsys
    )
    assert code == 0 and err == (
        f"skipped {images}/c.txt: not a readable image (PNG, JPEG, BMP, TIFF or DICOM); replace or remove it"
    )
    assert list(read_rows(out)) == ["a.png", "b.png"] and "; 1 bad file(s) skipped (listed above)" in stdout


def test_the_pixel_limit_and_links_to_nothing_make_bad_files(tmp_path, model_path, monkeypatch, capsys):
    images = tmp_path / "new"
    write_xray(images / "big.png", 1, shape=(120, 100))
    write_xray(images / "ok.png", 2)
    os.symlink("loop.png", images / "loop.png")
    os.symlink("nowhere.png", images / "gone.png")
    code, _, err = run_predict(
        [
            "--model",
            model_path,
            "--images",
            images,
            "--out",
            tmp_path / "p.csv",
            "--max-pixels",
            "10000",
            "--on-bad-image",
            "skip",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0 and list(read_rows(tmp_path / "p.csv")) == ["ok.png"]
    assert err.splitlines() == [
        f"skipped {images}/big.png: 100x120 = 12000 pixels exceeds --max-pixels (10000); downscale the image or "
        "raise --max-pixels if it is genuine",
        f"skipped {images}/gone.png: not found (or a broken or looping link); fix the path or remove it",
        f"skipped {images}/loop.png: not found (or a broken or looping link); fix the path or remove it",
    ]

    # Nothing readable at all: refused, nothing written.
    os.remove(images / "ok.png")
    code, _, err = run_predict(
        [
            "--model",
            model_path,
            "--images",
            images,
            "--out",
            tmp_path / "q.csv",
            "--max-pixels",
            "10000",
            "--on-bad-image",
            "skip",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 2 and err.splitlines()[-1] == f"error: no readable image in {images} (3 skipped); nothing to predict"
    assert not (tmp_path / "q.csv").exists()


@pytest.mark.parametrize("flag", ["--batch-size", "--max-pixels"])
def test_a_non_positive_batch_size_or_limit_is_refused(tmp_path, monkeypatch, capsys, flag):
    code, _, err = run_predict(
        ["--model", "m.pt", "--images", tmp_path, "--out", "p.csv", flag, "0"], monkeypatch, capsys
    )
    assert code == 2 and err == f"error: {flag} must be a positive integer, got 0"


def test_a_missing_model_or_image_source_is_refused_saying_where_they_come_from(
    tmp_path, model_path, monkeypatch, capsys
):
    code, _, err = run_predict(
        ["--model", tmp_path / "models/resnet18.pt", "--images", tmp_path, "--out", "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        f"error: model {tmp_path}/models/resnet18.pt not found; train one (dvc repro: "
        "models/<backbone>/seed<seed>.pt; make demo: demo/models/...) or pull one "
        "(dvc pull, docs/remote.md)"
    )
    code, _, err = run_predict(
        ["--model", model_path, "--images", tmp_path / "gone", "--out", "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        f"error: {tmp_path}/gone not found; pass a folder of images, or a CSV with a 'path' column, with --images"
    )
    write_xray(tmp_path / "one.png", 1)
    code, _, err = run_predict(
        ["--model", model_path, "--images", tmp_path / "one.png", "--out", "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and err.startswith(f"error: {tmp_path}/one.png is neither a folder nor a .csv list")


def test_the_val_fit_beside_the_model_gives_scaled_probabilities_sets_and_flags(
    tmp_path, model_path, monkeypatch, capsys
):
    """evaluate's <model>.calibration.json is found from --model alone: temperature applied, each film's
    prediction set and operating-point flag written; one for other classes is refused by name."""
    import json
    import shutil

    from stages.lib.model.inference import load_model
    from stages.lib.results.posthoc import apply_temperature

    model = shutil.copy(model_path, tmp_path / "seed42.pt")
    fitted = {
        "version": 1,
        "classes": list(STUDY_CLASSES),
        "temperature": {"value": 0.5},
        "alpha": 0.1,
        "conformal_threshold": 0.8,
        "operating_points": {"COVID-19": {"threshold": 0.25}, "virus": {"threshold": None}},
    }
    (tmp_path / "seed42.calibration.json").write_text(json.dumps(fitted))
    for i in range(3):
        write_xray(tmp_path / "new" / f"{i}.png", i)
    code, out, _ = run_predict(
        ["--model", model, "--images", tmp_path / "new", "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 0 and "seed42.calibration.json" in out
    lines = (tmp_path / "p.csv").read_text().splitlines()
    assert lines[0] == HEADER + ",prediction_set,flag_COVID-19"
    net, _ = load_model(model)
    for line in lines[1:]:
        name, _, *rest = line.split(",")
        scaled = apply_temperature(expected_probs(net, tmp_path / "new" / name)[None], 0.5)[0]
        np.testing.assert_allclose(np.array(rest[:4], float), scaled, atol=2e-6)
        assert rest[4] == "|".join(c for c, p in zip(STUDY_CLASSES, scaled) if p >= 0.2)
        assert rest[5] == str(int(scaled[3] >= 0.25))

    # a fit val could not support: not applied, and the last line says which part and why
    why = "not applied: val has 8 labelled films, fewer than the 20 a fit needs"
    unfit = {
        **fitted,
        "temperature": {"value": 1.0, "note": f"{why}; T = 1, probabilities unchanged"},
        "conformal_threshold": 1.0,
        "conformal_note": f"{why}; every set holds every class",
    }
    (tmp_path / "seed42.calibration.json").write_text(json.dumps(unfit))
    code, out, _ = run_predict(
        ["--model", model, "--images", tmp_path / "new", "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 0 and (
        f"(flags from {tmp_path}/seed42.calibration.json; temperature: {why}; T = 1, probabilities unchanged; "
        f"prediction sets: {why}; every set holds every class) -> {tmp_path}/p.csv" in out
    )
    assert all(
        row.split(",")[6] == "|".join(STUDY_CLASSES) for row in (tmp_path / "p.csv").read_text().splitlines()[1:]
    )

    (tmp_path / "seed42.calibration.json").write_text(json.dumps({**fitted, "classes": ["normal", "pneumonia"]}))
    code, _, err = run_predict(
        ["--model", model, "--images", tmp_path / "new", "--out", tmp_path / "p.csv"], monkeypatch, capsys
    )
    assert code == 2 and "seed42.calibration.json does not belong to" in err and err.count("\n") == 0
