import numpy as np
import pytest
import torch

from stages.ensemble import ensemble
from stages.lib.core.backbones import BACKBONES
from stages.lib.core.errors import UserError
from stages.lib.core.files import read_json, write_text
from stages.lib.core.names import STUDY_CLASSES as CLASSES
from stages.lib.model import gradcam
from stages.lib.model.networks import build_model
from stages.lib.params.schema import Evaluate
from stages.lib.results.evaluation import predictions_csv, read_predictions

E = Evaluate(bootstrap_resamples=50, seed=0, calibration_bins=10)


def member(tmp_path, name, split, labels, probs, names=None, seed=42):
    names = names or [f"img{i}.png" for i in range(len(labels))]
    write_text(
        tmp_path / "predictions" / name / "seeds" / f"seed{seed}" / f"{split}.csv",
        predictions_csv(names, labels, probs, list(CLASSES)),
    )


def test_ensemble_is_the_mean_of_member_probabilities(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    members = {name: rng.dirichlet([1] * 4, len(labels)) for name in ("resnet18", "densenet121", "convnext_tiny")}
    for split in ("val", "test"):
        for name, probs in members.items():
            member(tmp_path, name, split, labels, probs)
    report = ensemble(
        list(members),
        [42],
        tmp_path / "predictions",
        {"classes": list(CLASSES)},
        tmp_path / "ens",
        tmp_path / "ensemble.json",
        tmp_path / "headline.json",
        E,
    )
    _, ens_labels, ens_probs = read_predictions(tmp_path / "ens" / "test.csv", list(CLASSES))
    rounded = [
        read_predictions(tmp_path / "predictions" / n / "seeds" / "seed42" / "test.csv", list(CLASSES))[2]
        for n in members
    ]
    np.testing.assert_allclose(ens_probs, np.mean(rounded, axis=0), atol=1e-6)
    np.testing.assert_array_equal(ens_labels, labels)
    assert read_json(tmp_path / "ensemble.json")["test"]["accuracy"] == report["test"]["accuracy"]
    assert report["members"] == [f"{n}/seed42" for n in members]


def test_ensemble_refuses_members_scored_on_different_images(tmp_path):
    labels = np.array([0, 1])
    probs = np.full((2, 4), 0.25)
    for split in ("val", "test"):
        member(tmp_path, "resnet18", split, labels, probs, ["a.png", "b.png"])
        member(tmp_path, "densenet121", split, labels, probs, ["a.png", "c.png"])
    with pytest.raises(UserError, match="densenet121/seeds/seed42/val.csv lists other images"):
        ensemble(
            ["resnet18", "densenet121"],
            [42],
            tmp_path / "predictions",
            {"classes": list(CLASSES)},
            tmp_path / "e",
            tmp_path / "e.json",
            tmp_path / "h.json",
            E,
        )


@pytest.mark.slow
@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_gradcam_heatmap_has_image_shape_and_unit_range(backbone):
    torch.manual_seed(0)
    model = build_model(backbone, 4, 0.1, pretrained=False)
    images = torch.randint(0, 256, (2, 1, 64, 64), dtype=torch.uint8)
    heat = gradcam.heatmaps(model, backbone, images, [0, 3])
    assert heat.shape == (2, 64, 64) and heat.dtype == np.float32
    assert heat.min() >= 0 and heat.max() <= 1 and heat.max() > 0
