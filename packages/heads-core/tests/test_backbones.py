import pytest
import torch

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
