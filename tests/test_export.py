"""`cxr4-export` and `cxr4-predict --model F.onnx`: an ONNX file checked against PyTorch when written, an
ensemble as one graph, and ONNX files that are not ours refused in one line. The README's export and
ONNX predict commands are run on the demo in tests/test_pipeline.py."""

import csv

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from helpers import run_predict
from stages.export import export_models
from stages.lib.core.errors import UserError
from stages.lib.model import onnx_files
from stages.lib.results import posthoc


def identity_onnx(path, opset: int, metadata: dict):
    """A one-node ONNX file (image -> probabilities) with the given opset and metadata."""
    node = helper.make_node("Identity", ["image"], ["probabilities"])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [1, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    for key, value in metadata.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


OURS = {
    "cxr4.format": onnx_files.FORMAT,
    "cxr4.classes": '["a", "b", "c", "d"]',
    "cxr4.members": "[]",
    "cxr4.preprocess": '{"img_size": 32, "center_crop_ratio": 0.9, "clahe_clip_limit": 1.5, "clahe_tile_grid": 2}',
}


@pytest.mark.parametrize(
    "kind, message",
    [
        (
            "foreign",
            "{f} was not written by cxr4-export (no cxr4 metadata: classes, preprocessing); export the model "
            "again with cxr4-export (opset 18)",
        ),
        (
            "old opset",
            "{f} uses ONNX opset 17, this version runs opset 18; export the model again with cxr4-export (opset 18)",
        ),
        ("not onnx", "{f} is not an ONNX file (DecodeError); export the model again with cxr4-export (opset 18)"),
    ],
)
def test_an_onnx_file_from_another_model_or_opset_is_refused_in_one_line(tmp_path, monkeypatch, capsys, kind, message):
    f = tmp_path / "m.onnx"
    if kind == "not onnx":
        f.write_bytes(b"\x08\x07garbage that is not protobuf\xff\xff")
    else:
        identity_onnx(f, 17 if kind == "old opset" else onnx_files.OPSET, OURS if kind == "old opset" else {})
    code, _, err = run_predict(["--model", f, "--images", tmp_path, "--out", tmp_path / "p.csv"], monkeypatch, capsys)
    assert code == 2 and err == "error: " + message.format(f=f) and not (tmp_path / "p.csv").exists()


def read_csv(path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_an_ensemble_is_one_graph_averaging_its_members_and_a_failed_check_writes_nothing(
    demo_project, tmp_path, monkeypatch, capsys
):
    demo = demo_project / "demo"
    members = [str(demo / "models" / b / "seed42.pt") for b in ("resnet18", "efficientnet_b0")]
    out = tmp_path / "ensemble.onnx"
    images = demo / "data" / "test_images"

    # The check compares onnxruntime with PyTorch after the export: past the tolerance, nothing is written.
    monkeypatch.setattr(onnx_files, "TOLERANCE", -1.0)
    with pytest.raises(UserError) as err:
        export_models(members, str(out), str(demo / "cache"), None)
    assert str(err.value).startswith(
        f"export to {out} failed its check on test films of {demo / 'cache'}: "
        "onnxruntime's probabilities differ from PyTorch's by up to "
    )
    assert str(err.value).endswith("films; nothing written") and not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    check = export_models(members, str(out), "no-cache", str(images))
    assert check["films"] == 16 and check["max_abs_diff"] <= 1e-4 and check["argmax_differs"] == 0
    # the members' raw probabilities: an ensemble graph carries no val fit (temperature) of its own
    monkeypatch.setattr(posthoc, "load", lambda *args: None)
    for i, model in enumerate([*members, out]):
        code, _, _ = run_predict(
            ["--model", model, "--images", images, "--out", tmp_path / f"{i}.csv", "--no-ood"], monkeypatch, capsys
        )
        assert code == 0
    runs = [read_csv(tmp_path / f"{i}.csv") for i in range(3)]
    probs = [np.array([[float(r[k]) for k in r if k.startswith("prob_")] for r in rows]) for rows in runs]
    np.testing.assert_allclose(probs[2], (probs[0] + probs[1]) / 2, atol=1e-4)
    assert [r["filename"] for r in runs[2]] == [r["filename"] for r in runs[0]]

    # An ensemble carries no OOD score (its members' features differ): asking for one is refused.
    code, _, err = run_predict(
        ["--model", out, "--images", images, "--out", tmp_path / "o.csv", "--ood"], monkeypatch, capsys
    )
    assert code == 2 and err == (
        f"error: --ood: {out} carries no fitted OOD score (an ensemble, or exported before "
        "evaluate fitted one); pass --no-ood, or export a single model after evaluate"
    )
