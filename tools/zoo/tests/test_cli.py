"""The zoo command end to end, run as a user runs it: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "version": "1.0.0",
    "task": "classification",
    "backbone": {"source": "torchvision", "name": "resnet18"},
    "num_classes": 3,
    "class_names": ["cat", "dog", "bird"],
    "preprocess": {"input_size": [64, 64], "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


def zoo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {"COLUMNS": "200", "PATH": "/usr/bin:/bin", "HOME": str(cwd or Path.cwd())}
    return subprocess.run([sys.executable, "-m", "zoo", *args], check=False, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


def write(folder: Path, filename: str, **overrides) -> Path:
    data = {**TINY, **overrides}
    path = folder / filename
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def manifests(tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    write(folder, "tiny.yaml")
    regression = {k: v for k, v in TINY.items() if k not in ("num_classes", "class_names")}
    regression.update(name="regress", task="regression", num_outputs=2)
    (folder / "regress.yaml").write_text(yaml.safe_dump(regression))
    return folder


def test_help_does_not_import_torch():
    code = "import sys; import zoo.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip() == "False"


def test_build_two_workers_loads_checkpoints(manifests, tmp_path):
    out = tmp_path / "out"
    result = zoo("build", str(manifests), "--out", str(out), "-j", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("built") == 2
    code = (
        "import sys, heads_core\n"
        "for path in sys.argv[1:]:\n"
        "    print(type(heads_core.load_model(path).model).__name__)\n"
    )
    paths = sorted(str(p) for p in out.glob("*.safetensors"))
    assert len(paths) == 2
    loaded = subprocess.run([sys.executable, "-c", code, *paths], check=False, capture_output=True, text=True, timeout=600)
    assert loaded.returncode == 0, loaded.stderr
    assert len(loaded.stdout.split()) == 2


def test_build_then_up_to_date(manifests, tmp_path):
    out = tmp_path / "out"
    first = zoo("build", str(manifests), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("built") == 2
    assert sorted(p.name for p in out.glob("*.safetensors")) == ["regress-1.0.0.safetensors", "tiny-1.0.0.safetensors"]
    lock = json.loads((out / "zoo.lock.json").read_text())
    assert set(lock["checkpoints"]) == {"regress-1.0.0.safetensors", "tiny-1.0.0.safetensors"}
    second = zoo("build", str(manifests), "--out", str(out))
    assert second.returncode == 0
    assert second.stdout.count("up to date") == 2


def test_changed_manifest_rebuilds(manifests, tmp_path):
    out = tmp_path / "out"
    assert zoo("build", str(manifests), "--out", str(out)).returncode == 0
    before = json.loads((out / "zoo.lock.json").read_text())["checkpoints"]["tiny-1.0.0.safetensors"]
    write(manifests, "tiny.yaml", seed=5)
    again = zoo("build", str(manifests), "--out", str(out))
    after = json.loads((out / "zoo.lock.json").read_text())["checkpoints"]["tiny-1.0.0.safetensors"]
    assert "built" in again.stdout
    assert after["checkpoint_sha256"] != before["checkpoint_sha256"]


def test_reformatted_manifest_is_not_rebuilt(manifests, tmp_path):
    out = tmp_path / "out"
    assert zoo("build", str(manifests), "--out", str(out)).returncode == 0
    path = manifests / "tiny.yaml"
    path.write_text("# a comment changes the file, not the manifest\n" + path.read_text())
    again = zoo("build", str(manifests), "--out", str(out))
    assert again.stdout.count("up to date") == 2


def test_other_library_versions_rebuild(manifests, tmp_path):
    out = tmp_path / "out"
    assert zoo("build", str(manifests), "--out", str(out)).returncode == 0
    lock_path = out / "zoo.lock.json"
    lock = json.loads(lock_path.read_text())
    recorded = lock["checkpoints"]["tiny-1.0.0.safetensors"]["versions"]
    assert {"torch", "heads-core"} <= set(recorded)
    # As if heads-core had been upgraded since, and the regression entry came from a lock without versions.
    recorded["heads-core"] = "0.0.1"
    del lock["checkpoints"]["regress-1.0.0.safetensors"]["versions"]
    lock_path.write_text(json.dumps(lock))
    again = zoo("build", str(manifests), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("built") == 2
    rewritten = json.loads(lock_path.read_text())["checkpoints"]
    assert rewritten["tiny-1.0.0.safetensors"]["versions"]["heads-core"] != "0.0.1"
    assert "versions" in rewritten["regress-1.0.0.safetensors"]
    third = zoo("build", str(manifests), "--out", str(out))
    assert third.stdout.count("up to date") == 2


def test_changed_weights_file_rebuilds(tmp_path):
    import torch
    import torchvision

    folder = tmp_path / "manifests"
    folder.mkdir()
    weights = folder / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    write(folder, "tiny.yaml", backbone={"source": "torchvision", "name": "resnet18", "weights": "resnet18.pth"})
    out = tmp_path / "out"
    first = zoo("build", str(folder), "--out", str(out))
    assert first.returncode == 0, first.stderr
    assert zoo("build", str(folder), "--out", str(out)).stdout.count("up to date") == 1
    lock = json.loads((out / "zoo.lock.json").read_text())["checkpoints"]["tiny-1.0.0.safetensors"]
    assert list(lock["weight_files"]) == [str(weights.resolve())]
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), weights)
    again = zoo("build", str(folder), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("built") == 1
    rebuilt = json.loads((out / "zoo.lock.json").read_text())["checkpoints"]["tiny-1.0.0.safetensors"]
    assert rebuilt["checkpoint_sha256"] != lock["checkpoint_sha256"]


BAD_MANIFESTS = {
    "unknown-key": ({"colour": "red"}, "colour: unknown key"),
    "misspelled-backbone": ({"backbone": {"source": "timm", "name": "resnet_18"}}, "did you mean"),
    "zero-classes": ({"num_classes": 0, "class_names": None}, "num_classes"),
    "negative-dropout": ({"dropout": -0.5}, "dropout"),
    "names-count": ({"num_classes": 2}, "class_names has 3 entries but num_classes is 2"),
}


@pytest.mark.parametrize("case", sorted(BAD_MANIFESTS))
def test_bad_manifest_fails_and_writes_nothing(tmp_path, case):
    overrides, expected = BAD_MANIFESTS[case]
    path = write(tmp_path, f"{case}.yaml", name=case, **overrides)
    out = tmp_path / "out"
    result = zoo("build", str(path), "--out", str(out))
    assert result.returncode == 2
    assert expected in result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    assert list(out.glob("*.safetensors")) == []
    assert not list(out.glob("*.partial"))


def test_one_failure_does_not_stop_the_rest(manifests, tmp_path):
    write(manifests, "broken.yaml", name="broken", num_classes=0, class_names=None)
    out = tmp_path / "out"
    result = zoo("build", str(manifests), "--out", str(out))
    assert result.returncode == 2
    assert len(list(out.glob("*.safetensors"))) == 2
    failed_lines = [line for line in result.stderr.splitlines() if line.startswith("failed:")]
    assert len(failed_lines) == 1
    assert "broken.yaml" in failed_lines[0]


def test_failed_build_row_names_no_checkpoint(tmp_path):
    # Valid manifest, but its weights file is damaged: the failure comes from the build itself.
    (tmp_path / "damaged.pth").write_bytes(b"\x00not a pickle" * 8)
    path = write(tmp_path, "lost.yaml", name="lost",
                 backbone={"source": "torchvision", "name": "resnet18", "weights": "damaged.pth"})
    out = tmp_path / "out"
    result = zoo("build", str(path), "--out", str(out))
    assert result.returncode == 1, result.stderr
    assert "damaged.pth: is damaged or not a PyTorch weights file" in result.stderr
    row = next(line for line in result.stdout.splitlines() if "lost.yaml" in line)
    assert "failed" in row
    assert "lost-1.0.0" not in row
    assert list(out.glob("*.safetensors")) == []


def test_duplicate_checkpoint_name_rejected(manifests, tmp_path):
    write(manifests, "twin.yaml", seed=9)
    out = tmp_path / "out"
    result = zoo("build", str(manifests), "--out", str(out))
    assert result.returncode == 2
    assert "already produces" in result.stderr


def test_validate_reports_each_problem(tmp_path):
    path = write(tmp_path, "bad.yaml", num_classes=0, dropout=2.0, class_names=None)
    result = zoo("validate", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert all(line.startswith(str(path)) for line in lines)


def test_inspect_and_predict_on_photograph(manifests, tmp_path):
    from PIL import Image
    from skimage import data

    out = tmp_path / "out"
    assert zoo("build", str(manifests / "tiny.yaml"), "--out", str(out)).returncode == 0
    checkpoint = out / "tiny-1.0.0.safetensors"
    info = zoo("inspect", str(checkpoint), "--json")
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["task"] == "classification"
    assert summary["parameters"] > 11_000_000
    assert len(summary["sha256"]) == 64
    photo = tmp_path / "astronaut.png"
    Image.fromarray(data.astronaut()).save(photo)
    text = zoo("predict", str(checkpoint), str(photo), "--top-k", "2")
    assert text.returncode == 0, text.stderr
    assert any(name in text.stdout for name in ("cat", "dog", "bird"))
    assert "%" in text.stdout
    result = json.loads(zoo("predict", str(checkpoint), str(photo), "--json").stdout)
    probabilities = [row["probability"] for row in result[0]["top_k"]]
    assert len(probabilities) == 3
    assert abs(sum(probabilities) - 1) < 1e-5


def test_predict_four_channels_needs_four_band_image(tmp_path):
    from PIL import Image

    path = write(tmp_path, "rgbn.yaml", name="rgbn",
                 backbone={"source": "torchvision", "name": "resnet18", "in_chans": 4},
                 preprocess={"input_size": [64, 64], "mean": [0.5] * 4, "std": [0.25] * 4})
    out = tmp_path / "out"
    assert zoo("build", str(path), "--out", str(out)).returncode == 0
    four_bands = tmp_path / "rgbn.png"
    Image.new("RGBA", (80, 80), (255, 0, 0, 90)).save(four_bands)
    result = zoo("predict", str(out / "rgbn-1.0.0.safetensors"), str(four_bands), "--json")
    assert result.returncode == 0, result.stderr
    # An RGB image has no fourth band, and inventing one would feed the model made-up data.
    three_bands = tmp_path / "rgb.png"
    Image.new("RGB", (80, 80), "red").save(three_bands)
    refused = zoo("predict", str(out / "rgbn-1.0.0.safetensors"), str(three_bands), "--json")
    assert refused.returncode == 2
    assert "the image is RGB with 3 channels, but the model takes in_chans=4" in refused.stderr


def test_schema_is_json():
    result = zoo("schema")
    assert result.returncode == 0
    assert json.loads(result.stdout)["discriminator"]["propertyName"] == "task"


def test_inspect_plain_file_is_clear(tmp_path):
    path = tmp_path / "not.safetensors"
    path.write_bytes(b"hello")
    result = zoo("inspect", str(path))
    assert result.returncode == 2
    assert "too short" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_bad_weights_file_does_not_stop_build(manifests, tmp_path, jobs):
    (manifests / "garbage.safetensors").write_bytes(b"\xff" * 1024)
    write(manifests, "garbage.yaml", name="garbage",
          backbone={"source": "timm", "name": "test_resnet", "weights": "garbage.safetensors"})
    out = tmp_path / "out"
    result = zoo("build", str(manifests), "--out", str(out), "-j", jobs)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "garbage.safetensors: not a readable safetensors file" in result.stderr
    assert sorted(path.name for path in out.glob("*.safetensors")) == ["regress-1.0.0.safetensors", "tiny-1.0.0.safetensors"]
    lock = json.loads((out / "zoo.lock.json").read_text())["checkpoints"]
    assert sorted(lock) == ["regress-1.0.0.safetensors", "tiny-1.0.0.safetensors"]


def test_unexpected_error_becomes_failed_outcome(manifests, tmp_path, monkeypatch):
    import heads_core
    from zoo.building import build_one

    def broken_build(*args, **kwargs):
        raise KeyError("surprise")

    monkeypatch.setattr(heads_core, "build_model", broken_build)
    outcome = build_one(str(manifests / "tiny.yaml"), str(tmp_path / "out"))
    assert outcome.status == "failed"
    assert outcome.message == f"{manifests / 'tiny.yaml'}: KeyError: 'surprise'"
    assert not list((tmp_path / "out").glob("*.safetensors"))


def test_lock_file_mode_matches_checkpoints(manifests, tmp_path):
    out = tmp_path / "out"
    assert zoo("build", str(manifests), "--out", str(out)).returncode == 0
    checkpoint_mode = (out / "tiny-1.0.0.safetensors").stat().st_mode & 0o777
    assert (out / "zoo.lock.json").stat().st_mode & 0o777 == checkpoint_mode


def test_version_names_packages():
    result = zoo("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("zoo 0.")
    assert "heads-core 0." in result.stdout


def test_out_that_is_a_file_rejected(manifests, tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    result = zoo("build", str(manifests), "--out", str(out))
    assert result.returncode == 2
    assert f"--out {out} is a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr
    assert out.read_text() == "not a folder"


def test_bare_list_names_default_registry(tmp_path):
    result = zoo("list", cwd=tmp_path)
    assert result.returncode == 2
    assert "zoo-build is not a folder" in result.stderr
    assert "list what you published with `zoo list" in result.stderr


def test_validate_finds_missing_weights_file(tmp_path):
    path = write(tmp_path, "lost.yaml", name="lost",
                 backbone={"source": "torchvision", "name": "resnet18", "weights": "gone.pth"})
    for command in ("validate", "build"):
        result = zoo(command, str(path), "--out", str(tmp_path / "out")) if command == "build" else zoo(command, str(path))
        assert result.returncode == 2, result.stderr
        assert "backbone.weights: weights file 'gone.pth' not found" in result.stderr
        assert str(tmp_path / "gone.pth") in result.stderr


def test_predict_goes_on_after_unreadable_image(tmp_path):
    from PIL import Image

    path = write(tmp_path, "tiny.yaml")
    out = tmp_path / "out"
    assert zoo("build", str(path), "--out", str(out)).returncode == 0
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 40), "blue").save(good)
    result = zoo("predict", str(out / "tiny-1.0.0.safetensors"), str(broken), str(good), "--json")
    assert result.returncode == 2
    assert f"error: {broken}: cannot read the image" in result.stderr
    assert [entry["image"] for entry in json.loads(result.stdout)] == [str(good)]
