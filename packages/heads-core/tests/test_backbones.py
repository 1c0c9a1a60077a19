import pytest
import torch
from heads_core import create_feature_backbone
from torch import nn


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_feature_levels_measured(source):
    backbone = create_feature_backbone(source, "resnet18", levels=[2, 3, 4])
    maps = backbone(torch.randn(1, 3, 64, 64))
    assert backbone.strides == [8, 16, 32]
    assert backbone.channels == [128, 256, 512]
    assert [m.shape[1] for m in maps] == backbone.channels


@pytest.mark.parametrize("source", ["timm", "torchvision"])
def test_missing_feature_level_named(source):
    with pytest.raises(ValueError, match=r"levels 0 to 4"):
        create_feature_backbone(source, "resnet18", levels=[1, 9])


def test_timm_options_reach_the_model():
    backbone = create_feature_backbone("timm", "vit_small_patch16_224", timm_kwargs={"dynamic_img_size": True})
    maps = backbone(torch.randn(1, 3, 160, 224))
    assert maps[-1].shape[-2:] == (10, 14)


@pytest.mark.parametrize(
    "name",
    ["test_convnext", "test_convnext2", "test_mambaout", "mobilenetv3_small_050", "ghostnet_050", "test_vit", "test_vit3", "coat_lite_tiny"],
)
def test_timm_head_after_pooling_kept(name):
    """A classifier whose head transforms the pooled features, rebuilt from its pretrained head, gives timm's outputs."""
    import timm
    from heads_core import ClassificationHead
    from heads_core._backbones import create_backbone

    torch.manual_seed(0)
    reference = timm.create_model(name, num_classes=5).eval()
    classifier = reference.pretrained_cfg["classifier"]
    trunk, channels, _ = create_backbone("timm", name)
    assert trunk.layout == "pooled"
    trunk.model.load_state_dict({k: v for k, v in reference.state_dict().items() if not k.startswith(classifier + ".")})
    head = ClassificationHead(channels, 5)
    head.fc.load_state_dict(reference.get_submodule(classifier).state_dict())
    model = nn.Sequential(trunk, head).eval()
    inputs = torch.randn(2, 3, *reference.pretrained_cfg["input_size"][-2:])
    with torch.no_grad():
        expected = reference(inputs)
        actual = model(inputs)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_timm_several_feature_maps_pooled():
    """A timm model whose forward_features returns a list of maps gives its pre-logits features."""
    from heads_core._backbones import create_backbone

    trunk, channels, _ = create_backbone("timm", "efficientvim_m1")
    assert trunk.layout == "pooled"
    assert trunk(torch.randn(1, 3, 224, 224)).shape == (1, channels, 1, 1)


TORCHVISION_MULTI_LAYER_CLASSIFIERS = [
    "mobilenet_v3_small",
    "convnext_tiny",
    pytest.param("maxvit_t", marks=pytest.mark.heavy),
    pytest.param("vgg11", marks=pytest.mark.heavy),
    pytest.param("vit_b_16", marks=pytest.mark.heavy),
]


@pytest.mark.parametrize("name", TORCHVISION_MULTI_LAYER_CLASSIFIERS)
def test_torchvision_classifier_hidden_layers_kept(name):
    """A torchvision classifier with hidden layers, rebuilt from its last layer, gives torchvision's outputs."""
    import torchvision
    from heads_core import ClassificationHead
    from heads_core._backbones import TorchvisionPreLogits, _last_linear, create_backbone

    torch.manual_seed(0)
    reference = torchvision.models.get_model(name, num_classes=5).eval()
    final = _last_linear(reference)
    trunk, channels, _ = create_backbone("torchvision", name)
    assert isinstance(trunk, TorchvisionPreLogits)
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith(final + ".")}
    trunk.model.load_state_dict(state)
    head = ClassificationHead(channels, 5)
    last = reference.get_submodule(final)
    head.fc.weight.data.copy_(last.weight)
    if last.bias is not None:
        head.fc.bias.data.copy_(last.bias)
    else:
        head.fc.bias.data.zero_()
    model = nn.Sequential(trunk, head).eval()
    inputs = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = reference(inputs)
        actual = model(inputs)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)


def test_torchvision_feature_trunk_without_classifier():
    """create_feature_backbone keeps using the stage trunk, without classifier parameters."""
    from heads_core._backbones import TorchvisionTrunk

    backbone = create_feature_backbone("torchvision", "mobilenet_v3_small")
    assert isinstance(backbone.trunk, TorchvisionTrunk)
    assert not any(name.startswith("model.classifier") for name, _ in backbone.trunk.named_parameters())
