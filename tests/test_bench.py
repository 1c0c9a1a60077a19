"""Smoke tests of the zoo-bench machinery: tiny models, one round, JSON structure only, never timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zoo_bench.anchor import pair_keys
from zoo_bench.measure import alternate, touch_tensors
from zoo_bench.rows import FAIL, PASS, load_rows, memory_row
from zoo_bench.zoo_cli import parse_build_table

STATUSES = {"PASS", "FAIL", "INFO", "N/A", "SKIP"}
ROW_KEYS = {
    "group", "case", "a_label", "a_median", "b_label", "b_median", "unit", "ratio", "ratio_definition", "ratios",
    "figures", "target", "status", "note", "samples",
}


def _spec(name: str, *shape: int) -> tuple[str, tuple[int, ...], torch.dtype]:
    return (name, shape, torch.float32)


def test_pair_keys_strips_wrapper_prefix() -> None:
    zoo = [_spec("backbone.model.stem.weight", 8, 3), _spec("backbone.model.norm.weight", 8), _spec("head.fc.weight", 10, 8)]
    anchor = [_spec("stem.weight", 8, 3), _spec("norm.weight", 8), _spec("head.weight", 10, 8)]

    names = pair_keys(zoo, anchor)

    assert names["backbone.model.stem.weight"] == "stem.weight"
    assert names["backbone.model.norm.weight"] == "norm.weight"
    assert names["head.fc.weight"] == "head.weight"


def test_pair_keys_rejects_shape_mismatch() -> None:
    zoo = [_spec("backbone.model.stem.weight", 8, 3), _spec("head.fc.weight", 10, 8)]
    anchor = [_spec("stem.weight", 8, 3), _spec("head.weight", 1000, 8)]

    with pytest.raises(ValueError, match="head.fc.weight"):
        pair_keys(zoo, anchor)


def test_pair_keys_rejects_count_mismatch() -> None:
    zoo = [_spec("backbone.model.stem.weight", 8, 3)]
    anchor = [_spec("stem.weight", 8, 3), _spec("head.weight", 10, 8)]

    with pytest.raises(ValueError, match="unpaired anchor tensors"):
        pair_keys(zoo, anchor)


def test_alternate_rotates_order_and_skips_warmup() -> None:
    calls: list[str] = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}

    samples = alternate(steps, rounds=2, warmup=1)

    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert {name: len(values) for name, values in samples.items()} == {"a": 2, "b": 2, "c": 2}


def test_touch_tensors_reads_every_tensor() -> None:
    module = torch.nn.Linear(2048, 4)
    with torch.no_grad():
        module.weight.fill_(1.0)
        module.bias.fill_(0.0)

    # One element per 4096-byte page of the weight plus its last element.
    assert touch_tensors(module) == 2048 * 4 / 1024 + 1


def test_parse_build_table_reads_rich_rows() -> None:
    output = (
        "                          zoo build\n"
        "┏━━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━━━━┳━━━━━━━━━┳━━━━━━━━━┓\n"
        "┃ manifest    ┃ checkpoint ┃ status     ┃ seconds ┃    size ┃\n"
        "┡━━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━━━━╇━━━━━━━━━╇━━━━━━━━━┩\n"
        "│ m/a.yaml    │ a-1.safet… │ built      │   12.50 │ 1.2 MiB │\n"
        "│ m/b.yaml    │ b-1.st     │ up to date │    0.00 │ 3.0 MiB │\n"
        "└─────────────┴────────────┴────────────┴─────────┴─────────┘\n"
    )

    rows = parse_build_table(output)

    assert [row["manifest"] for row in rows] == ["m/a.yaml", "m/b.yaml"]
    assert [row["status"] for row in rows] == ["built", "up to date"]
    assert rows[0]["seconds"] == 12.5


def test_load_rows_judge_speedup_per_round() -> None:
    result = {"checkpoint_bytes": 2**20, "samples": {"zoo": [1.0, 1.0, 2.0], "anchor": [6.0, 4.0, 12.0], "read": [0.5, 0.5, 0.5]}}

    speedup, floor = load_rows("model", 5.0, result)

    assert speedup.ratio == 6.0
    assert speedup.status == PASS
    assert floor.ratio == 2.0
    assert load_rows("model", 7.0, result)[0].status == FAIL


def test_memory_row_reports_not_measurable() -> None:
    reason = {"not_measurable": "heads_detection is not importable"}

    row = memory_row("model", [reason], [reason])

    assert row.status == "N/A"
    assert "heads_detection" in row.note


def _run_bench(tmp_path: Path, *arguments: str) -> dict:
    report_path = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "zoo_bench", "--smoke", "--json", str(report_path), *arguments],
        capture_output=True, text=True, timeout=1800, check=False, cwd=tmp_path,
    )
    # Exit status 1 means that a target was missed, which tiny models may well do.
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    assert "A (median)" in completed.stdout
    return json.loads(report_path.read_text())


def _check_rows(report: dict, groups: set[str]) -> None:
    assert {row["group"] for row in report["rows"]} == groups
    for row in report["rows"]:
        assert set(row) == ROW_KEYS
        assert row["status"] in STATUSES, row
    for key in ("cpus", "cpu_model", "memory_bytes", "python", "versions"):
        assert key in report["machine"]
    assert report["wall_s"] > 0


def test_smoke_load_and_forward(tmp_path: Path) -> None:
    report = _run_bench(tmp_path, "--groups", "load,forward", "--rounds", "1", "--forward-rounds", "1")

    _check_rows(report, {"load", "floor", "forward"})
    load = next(row for row in report["rows"] if row["group"] == "load")
    assert load["target"]["op"] == ">="
    assert len(load["samples"]["zoo"]) == 1
    assert load["ratio"] > 0


@pytest.mark.heavy
def test_smoke_every_group(tmp_path: Path) -> None:
    report = _run_bench(
        tmp_path, "--rounds", "1", "--build-rounds", "1", "--forward-rounds", "1", "--memory-rounds", "1",
        "--command-rounds", "1",
    )

    _check_rows(report, {"load", "floor", "memory", "cold", "build", "forward", "jobs", "cli", "gpu"})
    memory = next(row for row in report["rows"] if row["group"] == "memory")
    assert memory["unit"] == "bytes"
    assert memory["a_median"] > 0
    build = report["parallel_build"]
    assert len(build["rows"]) == 2
    assert all(row["seconds"] > 0 for row in build["rows"])
