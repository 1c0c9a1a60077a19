import json

import heads_core
import pytest
from heads_core import ManifestError, load_manifest, manifest_json_schema, validate_manifest

from .conftest import manifest_data


def test_yaml_json_and_toml_agree(tmp_path, write_manifest):
    from_yaml = load_manifest(write_manifest())
    json_path = tmp_path / "m.json"
    json_path.write_text(json.dumps(manifest_data()))
    toml_path = tmp_path / "m.toml"
    toml_path.write_text(
        'name = "tiny"\nversion = "1.0.0"\ntask = "classification"\nnum_classes = 3\n'
        'class_names = ["cat", "dog", "bird"]\n'
        '[backbone]\nsource = "torchvision"\nname = "resnet18"\n'
        "[preprocess]\ninput_size = [64, 64]\nmean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n"
    )
    assert load_manifest(json_path) == from_yaml
    assert load_manifest(toml_path) == from_yaml


def _problems(data, source="m.yaml"):
    with pytest.raises(ManifestError) as caught:
        validate_manifest(data, source)
    return caught.value


def test_unknown_key_names_field():
    error = _problems(manifest_data(num_clases=3))
    assert "m.yaml: num_clases: unknown key" in str(error)


def test_misspelled_backbone_suggests_names():
    error = _problems(manifest_data(backbone={"source": "timm", "name": "resnet_18"}))
    text = str(error)
    assert "backbone" in text
    assert "unknown timm backbone 'resnet_18'" in text
    assert "resnet18" in text


def test_misspelled_torchvision_backbone():
    text = str(_problems(manifest_data(backbone={"source": "torchvision", "name": "resnett50"})))
    assert "did you mean" in text
    assert "resnet50" in text


def test_zero_classes_rejected():
    text = str(_problems(manifest_data(num_classes=0, class_names=None)))
    assert "num_classes" in text
    assert "greater than or equal to 1" in text
    assert "got 0" in text
    assert "allowed: 1 <= num_classes <= 100000" in text


def test_negative_dropout_rejected():
    text = str(_problems(manifest_data(dropout=-0.1)))
    assert "dropout" in text
    assert "got -0.1" in text
    assert "allowed: 0.0 <= dropout < 1.0" in text


def test_nested_field_range_named():
    text = str(_problems(manifest_data(backbone={"source": "torchvision", "name": "resnet18", "in_chans": 0})))
    assert "backbone.in_chans" in text
    assert "allowed: 1 <= in_chans <= 64" in text


def test_class_names_count_must_match():
    text = str(_problems(manifest_data(num_classes=4)))
    assert "class_names has 3 entries but num_classes is 4" in text


def test_billion_classes_states_limit():
    text = str(_problems(manifest_data(num_classes=1_000_000_000, class_names=None)))
    assert "less than or equal to 100000" in text


def test_unknown_source_lists_choices():
    text = str(_problems(manifest_data(backbone={"source": "keras", "name": "resnet18"})))
    assert "backbone.source" in text
    assert "'timm'" in text
    assert "'torchvision'" in text


def test_unsafe_name_rejected():
    text = str(_problems(manifest_data(name="../escape")))
    assert "name:" in text


def test_missing_task_lists_choices():
    data = manifest_data()
    del data["task"]
    assert "task: missing; choose one of" in str(_problems(data))


def test_task_without_package_names_package(monkeypatch):
    registered = heads_core.plugins._registered_entry_points()
    core_only = {k: v for k, v in registered.items() if k in ("classification", "regression", "anomaly_detection")}
    monkeypatch.setattr(heads_core.plugins, "_registered_entry_points", lambda: core_only)
    text = str(_problems(manifest_data(task="segmentation")))
    assert "needs the package heads-segmentation" in text
    assert "pip install heads-segmentation" in text


def test_mean_length_must_match_in_chans():
    data = manifest_data(backbone={"source": "torchvision", "name": "resnet18", "in_chans": 1})
    assert "backbone.in_chans is 1" in str(_problems(data))


def test_default_preprocess_follows_in_chans():
    data = manifest_data(backbone={"source": "timm", "name": "resnet18", "in_chans": 4})
    del data["preprocess"]
    manifest = validate_manifest(data)
    assert len(manifest.preprocess.mean) == 4
    assert manifest.preprocess.input_size == (224, 224)


def test_yaml_alias_rejected(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("a: &x [1, 2]\nb: *x\n")
    with pytest.raises(ManifestError, match="aliases"):
        load_manifest(path)


def test_duplicate_yaml_key_rejected(tmp_path):
    path = tmp_path / "dup.yaml"
    path.write_text("name: a\nname: b\n")
    with pytest.raises(ManifestError, match="duplicate key 'name'"):
        load_manifest(path)


def test_empty_and_binary_files_rejected(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("  \n")
    with pytest.raises(ManifestError, match="empty"):
        load_manifest(empty)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(ManifestError, match="UTF-8"):
        load_manifest(binary)


def test_json_schema_has_every_core_task():
    schema = manifest_json_schema()
    text = json.dumps(schema)
    for task in ("classification", "anomaly_detection", "regression"):
        assert f'"{task}"' in text
    assert schema["discriminator"]["propertyName"] == "task"


def test_broken_plugin_only_breaks_its_task(monkeypatch):
    from importlib.metadata import EntryPoint

    registered = dict(heads_core.plugins._registered_entry_points())
    registered["segmentation"] = EntryPoint("segmentation", "no_such_module_xyz:PLUGIN", "heads_core.tasks")
    monkeypatch.setattr(heads_core.plugins, "_registered_entry_points", lambda: registered)
    heads_core.plugins._load.cache_clear()
    try:
        assert "segmentation" not in heads_core.installed_plugins()
        assert validate_manifest(manifest_data()).task == "classification"
        text = str(_problems(manifest_data(task="segmentation")))
        assert "failed to import" in text
        assert "no_such_module_xyz" in text
    finally:
        heads_core.plugins._load.cache_clear()


def test_key_with_line_break_stays_one_line():
    data = manifest_data(preprocess={" \x85": None})
    error = _problems(data)
    lines = str(error).splitlines()
    assert len(lines) == len(error.problems)
    assert "preprocess.' \\x85': unknown key" in str(error)


def test_partial_preprocess_filled_from_backbone():
    manifest = validate_manifest(manifest_data(
        backbone={"source": "timm", "name": "resnet18", "in_chans": 4},
        preprocess={"input_size": [64, 64], "resize": 72},
    ))
    assert manifest.preprocess.input_size == (64, 64)
    assert manifest.preprocess.resize == 72
    assert manifest.preprocess.mean == (0.485, 0.456, 0.406, 0.449)
    assert manifest.preprocess.std == (0.229, 0.224, 0.225, 0.226)


def test_resize_below_crop_rejected():
    text = str(_problems(manifest_data(
        preprocess={"input_size": [64, 64], "resize": 10, "mean": [0.5] * 3, "std": [0.25] * 3},
    )))
    assert "preprocess: resize 10 is smaller than input_size's shorter side 64" in text
    assert "give resize of at least 64" in text


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("torchvision", "unknown torchvision weights 'a1_in1k_nope' for resnet18; choose one of: DEFAULT, IMAGENET1K_V1"),
        ("timm", "unknown timm pretrained tag 'a1_in1k_nope' for resnet18; choose one of: a1_in1k,"),
    ],
)
def test_unknown_weights_tag_rejected(source, expected):
    text = str(_problems(manifest_data(backbone={"source": source, "name": "resnet18", "weights": "a1_in1k_nope"})))
    assert f"m.yaml: backbone: {expected}" in text


def test_number_for_text_suggests_quotes():
    text = str(_problems(manifest_data(version=1.0)))
    assert 'version: Input should be a valid string (got 1.0); put the value in quotes to keep it text, such as "1.0"' in text


@pytest.mark.parametrize(("source", "name"), [("timm", "vit_tiny_patch16_224"), ("torchvision", "vit_b_16")])
def test_fixed_input_size_enforced(source, name):
    data = manifest_data(backbone={"source": source, "name": name},
                         preprocess={"input_size": [384, 384], "mean": [0.5] * 3, "std": [0.25] * 3})
    text = str(_problems(data))
    assert f"{source} {name} accepts only 224x224 inputs, but preprocess.input_size is [384, 384]" in text
    assert "set it to [224, 224] or leave it out" in text
    assert validate_manifest({**data, "preprocess": None}).preprocess.input_size == (224, 224)


def test_partial_preprocess_keeps_pretrained_settings():
    backbone = {"source": "timm", "name": "resnet18"}
    full = validate_manifest(manifest_data(backbone=backbone, preprocess=None)).preprocess
    only_mean = validate_manifest(manifest_data(backbone=backbone, preprocess={"mean": [0.5] * 3})).preprocess
    assert (only_mean.input_size, only_mean.resize, only_mean.interpolation) == (full.input_size, full.resize, "bicubic")
    assert only_mean.std == full.std
    only_size = validate_manifest(manifest_data(backbone=backbone, preprocess={"input_size": [160, 192]})).preprocess
    assert (only_size.resize, only_size.interpolation) == (None, "bicubic")


def test_partial_mean_for_other_channel_count_named():
    data = manifest_data(backbone={"source": "timm", "name": "resnet18", "in_chans": 4}, preprocess={"mean": [0.5] * 3})
    assert "preprocess.mean and preprocess.std have 3 values but backbone.in_chans is 4" in str(_problems(data))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("num_classes", True, "m.yaml: num_classes must be a number, not a boolean"),
        ("seed", False, "m.yaml: seed must be a number, not a boolean"),
        ("dropout", "0.2", "m.yaml: dropout must be a number, not the text '0.2' (write it without quotes)"),
    ],
)
def test_booleans_and_text_are_not_numbers(field, value, expected):
    assert expected in str(_problems(manifest_data(**{field: value}, class_names=None)))


def test_unsupported_torchvision_model_lists_families():
    text = str(_problems(manifest_data(backbone={"source": "torchvision", "name": "googlenet"})))
    assert "torchvision 'googlenet' is not supported as a backbone; the supported families are" in text
    assert "resnet" in text


def test_single_number_for_list_suggests_list():
    data = manifest_data(preprocess={"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3})
    assert "preprocess.input_size: Input should be a valid tuple (got 64); write a list, such as [64, 64]" in str(_problems(data))


def test_optional_field_range_named():
    data = manifest_data(preprocess={"input_size": [64, 64], "resize": 4, "mean": [0.5] * 3, "std": [0.25] * 3})
    assert "preprocess.resize: Input should be greater than or equal to 8 (got 4); allowed: 8 <= resize <= 8192" in str(
        _problems(data)
    )
