from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import ROOT
from stages.lib.core import backbones
from stages.lib.core.backbones import BACKBONES, REGISTRY, Backbone
from stages.lib.core.errors import UserError
from stages.lib.model.networks import build_model, gradcam_layer, head


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_backbone_outputs_four_logits_through_dropout_linear_head(backbone):
    model = build_model(backbone, num_classes=4, dropout=0.1, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 4)
    dropout, linear = list(head(model, backbone))[-2:]
    assert isinstance(dropout, nn.Dropout) and dropout.p == 0.1
    assert isinstance(linear, nn.Linear) and linear.out_features == 4


def test_unknown_backbone_is_refused_with_the_allowed_names():
    with pytest.raises(UserError, match="unknown backbone 'vit_b16'.*resnet18"):
        build_model("vit_b16", 4, 0.1, pretrained=False)


def test_missing_pretrained_weights_fail_with_how_to_provide_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")  # no network, fail at once
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    with pytest.raises(UserError) as err:
        build_model("resnet18", 4, 0.1, pretrained=True)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "TORCH_HOME" in message and "train.pretrained=false" in message
    assert "resnet18-f37072fd.pth" in message


def test_cached_pretrained_weights_are_loaded_not_random(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    reference = build_model("resnet18", 4, 0.1, pretrained=False)
    donor = {k: v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # torchvision checks the file's hash prefix only when downloading; a cached file is trusted.
    torch.save(
        {**donor, "fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)},
        checkpoints / "resnet18-f37072fd.pth",
    )
    model = build_model("resnet18", 4, 0.1, pretrained=True)
    assert torch.equal(model.conv1.weight, reference.conv1.weight)


def test_a_fifth_backbone_is_one_record_in_the_registry(monkeypatch, tmp_path):
    """docs/design.md: to add a backbone, touch only stages/lib/core/backbones.py. One record there (added in
    place, as an edit of the file would) and params accept it, and list it by default when it carries the
    study's numbers; the network builds with the study's head, Grad-CAM's layer resolves, and a checkpoint of
    it passes the metadata check and loads back."""
    from stages.lib.core.names import STUDY_CLASSES
    from stages.lib.model import gradcam
    from stages.lib.model.checkpoints import save_checkpoint
    from stages.lib.model.inference import load_model
    from stages.lib.params.schema import Config, Preprocess

    four = Config().backbones
    new = "mobilenet_v3_small"  # a Sequential classifier whose first two modules stay, as ConvNeXt's do
    monkeypatch.setitem(BACKBONES, new, Backbone("IMAGENET1K_V1", "classifier", 2, "features.12", (0.5, 0.5)))
    assert Config().backbones == [*four, new]
    assert Config.model_validate({**Config().model_dump(), "backbones": [new]}).backbones == [new]

    model = build_model(new, num_classes=len(STUDY_CLASSES), dropout=0.3, pretrained=False).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, len(STUDY_CLASSES))
    kept, dropout, linear = list(head(model, new))[1:]
    assert isinstance(kept, nn.Hardswish) and isinstance(dropout, nn.Dropout) and dropout.p == 0.3
    assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (1024, len(STUDY_CLASSES))
    assert gradcam_layer(model, new) is model.features[-1]
    heat = gradcam.heatmaps(model, new, torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8), [2])
    assert heat.shape == (1, 64, 64)

    meta = {"backbone": new, "classes": list(STUDY_CLASSES), "preprocess": Preprocess().model_dump(), "dropout": 0.3}
    save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, _ = load_model(tmp_path / "m.pt", backbone=new)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


def test_messages_about_backbones_name_the_registry_file_and_its_records():
    assert (ROOT / REGISTRY).resolve() == Path(backbones.__file__).resolve()
    with pytest.raises(UserError) as err:
        backbones.spec("vit_b16")
    assert str(err.value) == f"unknown backbone 'vit_b16'; {REGISTRY} has records for {', '.join(BACKBONES)}"
