"""The publish, pull, list and inspect commands on the default layout registry, run in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from zoo.registry import list_tags, publish


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "250"}
    return subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, cwd=cwd, env=environment, timeout=300, check=False)


def test_publish_list_inspect_pull(checkpoint, tmp_path):
    source = checkpoint()
    layout = tmp_path / "cache" / "zoo" / "registry" / "tiny"

    published = zoo("publish", str(source), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    digest_reference = published.stdout.strip()
    assert digest_reference.startswith(f"oci-layout:{layout}@sha256:")
    assert f"published {source} as oci-layout:{layout}:1.0.0" in published.stderr

    listed = zoo("list", "tiny", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "1.0.0" in listed.stdout
    assert "classification" in listed.stdout

    repositories = zoo("list", "--registry", str(tmp_path / "cache" / "zoo" / "registry"), cwd=tmp_path)
    assert repositories.returncode == 0, repositories.stderr
    assert f"oci-layout:{layout}" in repositories.stdout

    inspected = zoo("inspect", "tiny:1.0.0", "--json", cwd=tmp_path)
    assert inspected.returncode == 0, inspected.stderr
    summary = json.loads(inspected.stdout)
    assert summary["digest_reference"] == digest_reference
    assert summary["file"] == source.name
    assert summary["annotations"]["zoo.task"] == "classification"

    pulled = zoo("pull", "tiny:1.0.0", "--out", "pulled", cwd=tmp_path)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == str(Path("pulled") / source.name)
    assert (tmp_path / "pulled" / source.name).read_bytes() == source.read_bytes()

    by_path = zoo("inspect", f"{layout}:1.0.0", cwd=tmp_path)
    assert by_path.returncode == 0, by_path.stderr
    assert f"oci-layout:{layout}:1.0.0" in by_path.stdout
    assert "zoo.task" in by_path.stdout

    layout_tags = zoo("list", str(layout), cwd=tmp_path)
    assert layout_tags.returncode == 0, layout_tags.stderr
    assert "1.0.0" in layout_tags.stdout

    checkpoints = zoo("list", "pulled", cwd=tmp_path)
    assert checkpoints.returncode == 0, checkpoints.stderr
    assert source.name in checkpoints.stdout


def test_publish_again_and_conflict(checkpoint, tmp_path):
    source = checkpoint()
    first = publish(source)

    again = zoo("publish", str(source), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == str(first.digest_reference)
    assert "already points to this checkpoint" in again.stderr
    assert "0 uploaded (0 B), 2 already present" in again.stderr

    conflict = zoo("publish", str(checkpoint(seed=9)), cwd=tmp_path)
    assert conflict.returncode == 1
    assert f"already points to {first.digest}" in conflict.stderr
    assert "--force" in conflict.stderr
    assert [info.digest for info in list_tags("tiny")] == [first.digest]


def test_bad_references_exit_codes(tmp_path):
    invalid = zoo("pull", "oci://127.0.0.1:5000/Tiny:1", cwd=tmp_path)
    assert invalid.returncode == 2
    assert "repository 'Tiny'" in invalid.stderr

    missing = zoo("pull", "absent:1.0.0", cwd=tmp_path)
    assert missing.returncode == 1
    assert "is not an OCI image layout" in missing.stderr

    no_file = zoo("publish", "nothing.safetensors", cwd=tmp_path)
    assert no_file.returncode == 2
    assert "no such file" in no_file.stderr
    for completed in (invalid, missing, no_file):
        assert "Traceback" not in completed.stderr


def test_interrupted_layout_publish_is_clean(checkpoint, tmp_path):
    source = checkpoint()
    layout = tmp_path / "layout"

    def interrupt(label: str, done: int, total: int) -> None:
        if label == source.name:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish(source, str(layout), progress=interrupt)
    assert list(layout.rglob("*.partial")) == []
    assert list_tags(str(layout)) == []

    finished = publish(source, str(layout))
    assert finished.uploaded_blobs == 1
    assert [info.tag for info in list_tags(str(layout))] == ["1.0.0"]


def test_import_stays_light():
    code = (
        "import sys, zoo, zoo.cli, zoo.registry; "
        "print(sorted(m for m in ('torch', 'requests', 'heads_core') if m in sys.modules)); "
        "print(callable(zoo.load), callable(zoo.publish), callable(zoo.pull))"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert completed.returncode == 0, completed.stderr
    loaded, callables = completed.stdout.splitlines()
    assert loaded == "[]"
    assert callables == "True True True"
