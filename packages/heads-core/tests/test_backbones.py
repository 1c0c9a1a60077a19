import pytest
import torch
from torch import nn

from heads_core import create_feature_backbone


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
