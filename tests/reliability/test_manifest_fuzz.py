"""Property-based tests: mutated manifests either validate or fail with a manifest error.

Each example takes a valid manifest, replaces or adds one field with a value
of the wrong type, out of range, empty, huge, unicode or deeply nested, writes
it as YAML, JSON or TOML, and validates it. The only acceptable outcomes are a
valid manifest or a ManifestError naming the file and a field.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from heads_core import ManifestError, load_manifest
from hypothesis import given, settings
from hypothesis import strategies as st

VALID: dict[str, Any] = {
    "name": "fuzz",
    "version": "1.0.0",
    "task": "classification",
    "backbone": {"source": "torchvision", "name": "resnet18", "in_chans": 3},
    "num_classes": 2,
    "class_names": ["a", "b"],
    "dropout": 0.1,
    "seed": 0,
    "preprocess": {"input_size": [32, 32], "mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2]},
}

FIELDS = [
    ("name",),
    ("version",),
    ("description",),
    ("task",),
    ("backbone",),
    ("backbone", "source"),
    ("backbone", "name"),
    ("backbone", "weights"),
    ("backbone", "in_chans"),
    ("num_classes",),
    ("class_names",),
    ("dropout",),
    ("seed",),
    ("preprocess",),
    ("preprocess", "input_size"),
    ("preprocess", "mean"),
    ("preprocess", "std"),
    ("preprocess", "resize"),
    ("preprocess", "interpolation"),
    ("unknown_field",),
    ("backbone", "unknown_field"),
]


def nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": [value]}
    return value


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 10**9, 10**12, 100_000, 100_001, 2**32]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=50),
    st.sampled_from(["", " ", "../../etc", "a/b", "é", "名字", "\x00", "x" * 5000, "resnet_18", "timm", "DEFAULT"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=6),
    st.dictionaries(st.text(max_size=8), scalars, max_size=4),
    st.integers(min_value=1, max_value=60).map(nested),
    st.just([[1, 2], [3, 4]]),
    st.just(["x"] * 2000),
)


def mutate(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    data = json.loads(json.dumps(VALID))
    target = data
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return data


def write(folder: Path, data: dict[str, Any], fmt: str) -> Path | None:
    path = folder / f"manifest.{fmt}"
    if fmt == "yaml":
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
    elif fmt == "json":
        try:
            path.write_text(json.dumps(data, allow_nan=True))
        except (ValueError, RecursionError):
            return None
    else:
        path.write_text(to_toml(data))
    return path


def to_toml(data: dict[str, Any]) -> str:
    """A TOML writer for the simple tables used here; JSON strings are valid TOML basic strings."""
    lines, tables = [], []
    for key, value in data.items():
        if isinstance(value, dict):
            tables.append((key, value))
        else:
            lines.append(f'"{key}" = {toml_value(value)}')
    for name, table in tables:
        lines.append(f'["{name}"]')
        lines += [f'"{k}" = {toml_value(v)}' for k, v in table.items()]
    return "\n".join(lines) + "\n"


def toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return json.dumps(value).replace("NaN", "nan").replace("Infinity", "inf")
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"


def check(path: Path) -> str:
    try:
        load_manifest(path)
    except ManifestError as error:
        assert error.problems, "a manifest error lists at least one problem"
        for line in str(error).splitlines():
            assert line.startswith(str(path)), line
        return "invalid"
    return "valid"


OUTCOMES: dict[str, int] = {"valid": 0, "invalid": 0}


@given(path=st.sampled_from(FIELDS), value=values, fmt=st.sampled_from(["yaml", "json", "toml"]))
def test_mutated_manifest_builds_or_explains(path, value, fmt):
    with tempfile.TemporaryDirectory() as folder:
        written = write(Path(folder), mutate(path, value), fmt)
        if written is None:
            return
        OUTCOMES[check(written)] += 1


@pytest.mark.heavy
@settings(max_examples=1500)
@given(path=st.sampled_from(FIELDS), value=values, fmt=st.sampled_from(["yaml", "json", "toml"]))
def test_mutated_manifest_large_run(path, value, fmt):
    test_mutated_manifest_builds_or_explains.hypothesis.inner_test(path, value, fmt)


@given(data=st.binary(max_size=400))
def test_random_bytes_never_crash(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "random.yaml"
        path.write_bytes(data)
        check(path)


def test_exponential_aliases_rejected(tmp_path):
    lines = ['a0: &a0 ["lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, 10)]
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ManifestError, match="aliases"):
        load_manifest(path)


def test_deep_nesting_rejected(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ManifestError):
        load_manifest(path)


def test_several_megabytes_rejected(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text("description: " + "x" * (3 << 20) + "\n")
    with pytest.raises(ManifestError, match="limited to 1048576"):
        load_manifest(path)


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("num_classes", 1_000_000_000, "100000"),
        ("preprocess", {"input_size": [100000, 100000], "mean": [0.5] * 3, "std": [0.2] * 3}, "8192"),
    ],
)
def test_memory_exhausting_numbers_state_limit(tmp_path, field, value, limit):
    data = mutate((field,), value)
    data.pop("class_names")
    path = write(tmp_path, data, "yaml")
    with pytest.raises(ManifestError, match=limit):
        load_manifest(path)


@pytest.mark.parametrize(
    ("field", "value"),
    [("name", "../outside"), ("name", "a/b"), ("version", "1/../../x"), ("version", ".hidden"), ("name", "CON\x00")],
)
def test_names_cannot_leave_output_folder(tmp_path, field, value):
    path = write(tmp_path, mutate((field,), value), "yaml")
    with pytest.raises(ManifestError, match=field):
        load_manifest(path)


def test_cli_reports_one_line_per_problem(tmp_path):
    """Many generated bad manifests through `zoo validate` in one run: exit 2, no traceback."""
    import random
    import subprocess
    import sys

    rng = random.Random(0)
    bad_values = [None, -1, 0, 10**12, "", "x" * 300, [1, [2]], {"a": 1}, float("nan"), True, "../x"]
    paths = []
    for index in range(60):
        data = mutate(rng.choice(FIELDS), rng.choice(bad_values))
        path = write(tmp_path, data, rng.choice(["yaml", "json", "toml"]))
        if path is None:
            continue
        path = path.rename(tmp_path / f"case{index}{path.suffix}")
        paths.append(path)
    result = subprocess.run([sys.executable, "-m", "zoo", "validate", *map(str, paths)],
                            check=False, capture_output=True, text=True, timeout=600, env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines
    for line in lines:
        assert line.startswith(str(tmp_path / "case")), line
