import pytest
import torch
from torch import nn

from stages.lib.core.errors import UserError
from stages.lib.model.registry import BACKBONES, build_model, head


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


def test_a_new_backbone_is_one_record(monkeypatch):
    from stages.lib.model import gradcam
    from stages.lib.model.registry import Backbone, gradcam_layer
    from stages.lib.params.schema import Config

    monkeypatch.setitem(BACKBONES, "resnet34", Backbone("IMAGENET1K_V1", "fc", 0, "layer4.2"))
    assert Config.model_validate({**Config().model_dump(), "backbones": ["resnet34"]}).backbones == ["resnet34"]
    model = build_model("resnet34", num_classes=3, dropout=0.2, pretrained=False).eval()
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 3) and gradcam_layer(model, "resnet34") is model.layer4[-1]
    heat = gradcam.heatmaps(model, "resnet34", torch.randint(0, 256, (1, 1, 64, 64), dtype=torch.uint8), [2])
    assert heat.shape == (1, 64, 64)
