"""Killed and concurrent `zoo build` runs leave only complete checkpoints and a valid lock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from heads_core import load_model

SMALL = {"input_size": [32, 32], "mean": [0.5] * 3, "std": [0.2] * 3}
MANIFESTS = {
    "a.yaml": {"name": "a", "version": "1", "task": "classification", "num_classes": 2,
               "backbone": {"source": "torchvision", "name": "resnet18"}, "preprocess": SMALL},
    "b.yaml": {"name": "b", "version": "1", "task": "regression", "num_outputs": 1,
               "backbone": {"source": "torchvision", "name": "mobilenet_v3_small"}, "preprocess": SMALL},
    "c.yaml": {"name": "c", "version": "1", "task": "anomaly_detection",
               "backbone": {"source": "timm", "name": "resnet18"}, "preprocess": SMALL},
}


@pytest.fixture
def manifests(tmp_path):
    folder = tmp_path / "manifests"
    folder.mkdir()
    for name, data in MANIFESTS.items():
        (folder / name).write_text(yaml.safe_dump(data))
    return folder


def start_build(manifests: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "zoo", "build", str(manifests), "--out", str(out), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )


def assert_consistent(out: Path) -> dict:
    """Every checkpoint loads, and the lock names only complete checkpoints with their hashes."""
    for path in out.glob("*.safetensors"):
        load_model(path)
    lock_path = out / "zoo.lock.json"
    if not lock_path.exists():
        return {}
    entries = json.loads(lock_path.read_text())["checkpoints"]
    for name, entry in entries.items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == entry["checkpoint_sha256"]
    return entries


@pytest.mark.parametrize(
    "delay", [0.5, 4.0, pytest.param(2.5, marks=pytest.mark.heavy), pytest.param(6.0, marks=pytest.mark.heavy),
              pytest.param(8.0, marks=pytest.mark.heavy)]
)
def test_sigkill_then_rebuild(manifests, tmp_path, delay):
    out = tmp_path / "out"
    process = start_build(manifests, out, "-j", "2")
    time.sleep(delay)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert_consistent(out)
    finish = subprocess.run([sys.executable, "-m", "zoo", "build", str(manifests), "--out", str(out)],
                            check=False, capture_output=True, text=True, timeout=600)
    assert finish.returncode == 0, finish.stderr
    entries = assert_consistent(out)
    assert sorted(entries) == ["a-1.safetensors", "b-1.safetensors", "c-1.safetensors"]
    assert list(out.glob(".*.partial")) == []


def test_two_builds_at_once(manifests, tmp_path):
    out = tmp_path / "out"
    first, second = start_build(manifests, out), start_build(manifests, out)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    assert second.wait(timeout=600) == 0, second.stderr.read()
    entries = assert_consistent(out)
    assert len(entries) == 3
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(entries)
