"""Build each architecture from a validated manifest.

Construction reads no weights except the backbone weights passed in, and
changes no parameter value in a data-dependent way, so `heads_core.load_model`
can run it with parameters on the meta device and get the same modules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Any

from torch import nn
from torchvision.models.detection.anchor_utils import (
    AnchorGenerator,
    DefaultBoxGenerator,
)
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.models.detection.ssd import SSDHead
from torchvision.models.detection.ssdlite import SSDLiteHead
from torchvision.ops import MultiScaleRoIAlign

from .freezing import freeze_batchnorm, set_frozen_batchnorm_eps
from .manifest import DetectorManifest
from .models import ZooFasterRCNN, ZooFCOS, ZooMaskRCNN, ZooRetinaNet, ZooSSD
from .pyramid import (
    MEASURE_SIZE,
    PyramidLayout,
    build_fpn_backbone,
    build_selected_features,
    measure_maps,
)
from .ssd import (
    SSD_EXTRA_CHANNELS,
    SSDLITE_EXTRA_CHANNELS,
    SSDFeatureExtractor,
    ssd_extra_block,
    ssdlite_extra_block,
)
from .torchvision_backbones import (
    mobilenet_ssdlite_extractor,
    ssdlite_norm_layer,
    vgg_ssd_extractor,
)

__all__ = [
    "build_detector",
    "fcos_anchor_generator",
    "rcnn_anchor_generator",
    "retinanet_anchor_generator",
]

# SSD300's default boxes on VGG16, from torchvision's ssd300_vgg16.
SSD300_SIZE = (300, 300)
SSD300_ASPECT_RATIOS = [[2], [2, 3], [2, 3], [2, 3], [2], [2]]
SSD300_SCALES = [0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05]
SSD300_STEPS = [8, 16, 32, 64, 100, 300]


def rcnn_anchor_generator(strides: Sequence[int]) -> AnchorGenerator:
    """Return one anchor size per level, 8 x stride, at aspect ratios 0.5, 1 and 2.

    On strides 4 to 64 these are torchvision's Faster R-CNN anchors (32 to 512).
    """
    return AnchorGenerator(tuple((8 * s,) for s in strides), ((0.5, 1.0, 2.0),) * len(strides))


def retinanet_anchor_generator(strides: Sequence[int]) -> AnchorGenerator:
    """Return three anchor sizes per level from 4 x stride in steps of 2^(1/3), at three aspect ratios.

    On strides 8 to 128 these are torchvision's RetinaNet anchors.
    """
    sizes = tuple((4 * s, int(4 * s * 2 ** (1.0 / 3)), int(4 * s * 2 ** (2.0 / 3))) for s in strides)
    return AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(strides))


def fcos_anchor_generator(strides: Sequence[int]) -> AnchorGenerator:
    """Return one square anchor per location whose size equals the level's stride, as FCOS expects."""
    return AnchorGenerator(tuple((s,) for s in strides), ((1.0,),) * len(strides))


def _transform_kwargs(manifest: DetectorManifest) -> dict[str, Any]:
    min_size, max_size = manifest.image_size_limits()
    assert manifest.preprocess is not None
    kwargs: dict[str, Any] = {
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": list(manifest.preprocess.mean),
        "image_std": list(manifest.preprocess.std),
    }
    if manifest.fixed_size is not None:
        height, width = manifest.fixed_size
        kwargs["fixed_size"] = (width, height)  # torchvision's order is (width, height)
    return kwargs


def _measure_size(manifest: DetectorManifest) -> tuple[int, int]:
    return tuple(manifest.fixed_size) if manifest.fixed_size is not None else MEASURE_SIZE  # type: ignore[return-value]


def _labels(manifest: DetectorManifest) -> dict[str, int]:
    return {"num_object_classes": manifest.num_classes, "in_chans": manifest.backbone.in_chans}


def _is_pretrained(manifest: DetectorManifest) -> bool:
    return manifest.weights is not None or manifest.backbone.weights is not None


def _check_consecutive(layout: PyramidLayout, count: int, manifest: DetectorManifest) -> None:
    """R-CNN's RoI pooling maps boxes to levels assuming each level doubles the stride of the one before."""
    strides = layout.strides[:count]
    if any(b != 2 * a for a, b in pairwise(strides)):
        raise ValueError(
            f"backbone.levels {manifest.backbone.levels} give strides {strides}, but {manifest.architecture}'s RoI "
            "pooling needs consecutive levels whose strides double; choose consecutive levels such as [1, 2, 3]"
        )


def _build_rcnn(manifest: DetectorManifest, backbone_weights: str | None) -> nn.Module:
    backbone, layout = build_fpn_backbone(
        manifest.backbone,
        weights=backbone_weights,
        pretrained=_is_pretrained(manifest),
        extra="pool",
        min_stride=4,
        measure_size=_measure_size(manifest),
    )
    level_names = [name for name in layout.names if name != "pool"]
    _check_consecutive(layout, len(level_names), manifest)
    kwargs: dict[str, Any] = {
        **_transform_kwargs(manifest),
        **_labels(manifest),
        "rpn_anchor_generator": rcnn_anchor_generator(layout.strides),
        "box_roi_pool": MultiScaleRoIAlign(featmap_names=level_names, output_size=7, sampling_ratio=2),
        "box_score_thresh": manifest.score_threshold,
        "box_nms_thresh": manifest.nms_threshold,
        "box_detections_per_img": manifest.detections_per_image,
    }
    if manifest.proposals_per_image is not None:
        for phase in ("train", "test"):
            kwargs[f"rpn_pre_nms_top_n_{phase}"] = manifest.proposals_per_image
            kwargs[f"rpn_post_nms_top_n_{phase}"] = manifest.proposals_per_image
    if manifest.architecture == "mask_rcnn":
        mask_pool = MultiScaleRoIAlign(featmap_names=level_names, output_size=14, sampling_ratio=2)
        return ZooMaskRCNN(backbone, mask_roi_pool=mask_pool, **kwargs)
    return ZooFasterRCNN(backbone, **kwargs)


def _build_dense(manifest: DetectorManifest, backbone_weights: str | None) -> nn.Module:
    backbone, layout = build_fpn_backbone(
        manifest.backbone,
        weights=backbone_weights,
        pretrained=_is_pretrained(manifest),
        extra="p6p7",
        min_stride=8,
        measure_size=_measure_size(manifest),
    )
    kwargs: dict[str, Any] = {
        **_transform_kwargs(manifest),
        **_labels(manifest),
        "score_thresh": manifest.score_threshold,
        "nms_thresh": manifest.nms_threshold,
        "detections_per_img": manifest.detections_per_image,
    }
    classes = manifest.num_classes + 1
    if manifest.architecture == "retinanet":
        anchors = retinanet_anchor_generator(layout.strides)
        head = RetinaNetHead(backbone.out_channels, anchors.num_anchors_per_location()[0], classes)
        return ZooRetinaNet(backbone, anchor_generator=anchors, head=head, **kwargs)
    anchors = fcos_anchor_generator(layout.strides)
    return ZooFCOS(backbone, anchor_generator=anchors, head=FCOSHead(backbone.out_channels, 1, classes), **kwargs)


def _ssd_aspect_ratios(count: int, lite: bool) -> list[list[int]]:
    """Aspect ratios per map: SSDLite uses 2 and 3 everywhere, SSD only 2 on the first and last two maps."""
    if lite:
        return [[2, 3] for _ in range(count)]
    if count < 3:
        return [[2] for _ in range(count)]
    return [[2]] + [[2, 3] for _ in range(count - 3)] + [[2], [2]]


def _generic_ssd_backbone(
    manifest: DetectorManifest,
    backbone_weights: str | None,
    make_block: Callable[[int, int], nn.Module],
    extra_channels: Sequence[int],
) -> nn.Module:
    size = _measure_size(manifest)
    body = build_selected_features(
        manifest.backbone,
        weights=backbone_weights,
        pretrained=_is_pretrained(manifest),
        measure_size=size,
        keep_last=2,
        expand_single_stride=False,
    )
    channels = body.channels[-1]
    blocks = []
    for out_channels in extra_channels:
        blocks.append(make_block(channels, out_channels))
        channels = out_channels
    return SSDFeatureExtractor(body, blocks)


def _build_ssd(manifest: DetectorManifest, backbone_weights: str | None) -> nn.Module:
    spec = manifest.backbone
    size = _measure_size(manifest)
    on_vgg = spec.source == "torchvision" and spec.name.startswith("vgg")
    if on_vgg:
        if spec.levels is not None:
            raise ValueError(
                f"backbone.levels {spec.levels} cannot be used with SSD on VGG, which takes conv4_3 and the "
                "converted fc7 as torchvision's SSD300 does; remove backbone.levels"
            )
        backbone = vgg_ssd_extractor(
            spec.name,
            weights=backbone_weights,
            pretrained=_is_pretrained(manifest),
            in_chans=spec.in_chans,
            trainable=spec.trainable_layers,
        )
        if spec.frozen_batchnorm:
            backbone = freeze_batchnorm(backbone)
    else:
        backbone = _generic_ssd_backbone(manifest, backbone_weights, ssd_extra_block, SSD_EXTRA_CHANNELS)
    layout = measure_maps(backbone, spec.in_chans, size)
    if on_vgg and tuple(size) == SSD300_SIZE:
        anchors = DefaultBoxGenerator(SSD300_ASPECT_RATIOS, scales=SSD300_SCALES, steps=SSD300_STEPS)
    else:
        anchors = DefaultBoxGenerator(_ssd_aspect_ratios(len(layout.channels), lite=False))
    head = SSDHead(layout.channels, anchors.num_anchors_per_location(), manifest.num_classes + 1)
    return _zoo_ssd(manifest, backbone, anchors, head, size)


def _build_ssdlite(manifest: DetectorManifest, backbone_weights: str | None) -> nn.Module:
    spec = manifest.backbone
    size = _measure_size(manifest)
    norm_layer = ssdlite_norm_layer()
    if spec.source == "torchvision" and spec.name.startswith("mobilenet_v3"):
        if spec.levels is not None:
            raise ValueError(
                f"backbone.levels {spec.levels} cannot be used with SSDLite on MobileNetV3, which takes the C4 "
                "expansion layer and the last layer as torchvision's SSDLite does; remove backbone.levels"
            )
        backbone = mobilenet_ssdlite_extractor(
            spec.name,
            weights=backbone_weights,
            reduced_tail=spec.weights is None,
            in_chans=spec.in_chans,
            trainable=spec.trainable_layers,
            norm_layer=norm_layer,
        )
        if spec.frozen_batchnorm:
            freeze_batchnorm(backbone.features)
    else:
        backbone = _generic_ssd_backbone(
            manifest,
            backbone_weights,
            lambda cin, cout: ssdlite_extra_block(cin, cout, norm_layer),
            SSDLITE_EXTRA_CHANNELS,
        )
    layout = measure_maps(backbone, spec.in_chans, size)
    anchors = DefaultBoxGenerator(_ssd_aspect_ratios(len(layout.channels), lite=True), min_ratio=0.2, max_ratio=0.95)
    head = SSDLiteHead(layout.channels, anchors.num_anchors_per_location(), manifest.num_classes + 1, norm_layer)
    return _zoo_ssd(manifest, backbone, anchors, head, size, topk_candidates=300)


def _zoo_ssd(
    manifest: DetectorManifest, backbone: nn.Module, anchors: Any, head: nn.Module, size: Any, **options: Any
) -> nn.Module:
    """Assemble an SSD or SSDLite detector with the manifest's normalisation and post-processing."""
    return ZooSSD(
        backbone,
        anchors,
        (size[1], size[0]),
        head=head,
        image_mean=list(manifest.preprocess.mean),  # type: ignore[union-attr]
        image_std=list(manifest.preprocess.std),  # type: ignore[union-attr]
        score_thresh=manifest.score_threshold,
        nms_thresh=manifest.nms_threshold,
        detections_per_img=manifest.detections_per_image,
        **options,
        **_labels(manifest),
    )


_BUILDERS: dict[str, Callable[[DetectorManifest, str | None], nn.Module]] = {
    "faster_rcnn": _build_rcnn,
    "mask_rcnn": _build_rcnn,
    "retinanet": _build_dense,
    "fcos": _build_dense,
    "ssd": _build_ssd,
    "ssdlite": _build_ssdlite,
}


def build_detector(manifest: DetectorManifest, *, backbone_weights: str | None) -> nn.Module:
    """Build the detector of `manifest`, loading `backbone_weights` (a resolved path or tag) when given.

    Raises:
        ValueError: the backbone options do not fit the architecture, or the
            backbone fails on the input size the detector feeds it.
    """
    size = _measure_size(manifest)
    try:
        model = _BUILDERS[manifest.architecture](manifest, backbone_weights)
    except (AssertionError, RuntimeError) as error:
        raise ValueError(
            f"backbone {manifest.backbone.source}:{manifest.backbone.name} failed while building "
            f"{manifest.architecture} on a {size[0]}x{size[1]} input ({type(error).__name__}: {error}); if the "
            "backbone accepts only one input size, set fixed_size to it"
        ) from error
    if manifest.backbone.frozen_batchnorm_eps is not None:
        set_frozen_batchnorm_eps(model, manifest.backbone.frozen_batchnorm_eps)
    return model
