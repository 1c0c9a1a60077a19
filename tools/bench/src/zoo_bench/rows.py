"""Turn the raw measurements of the workers into rows: medians, ratios and a verdict per target."""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .measure import median, paired_ratios, quartiles

PASS, FAIL, INFO = "PASS", "FAIL", "INFO"
NOT_MEASURABLE, ERROR, SKIPPED = "N/A", "ERROR", "SKIP"

MAX_MEMORY_RATIO = 1.15
WRITE_ALLOWANCE = 1.2
MAX_FORWARD_RATIO = 1.02
MAX_UNCHANGED_BUILD_EXTRA_S = 1.0
MAX_HELP_S = 0.5

_OPERATORS: dict[str, Callable[[float, float], bool]] = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


@dataclass
class Target:
    """A limit on one figure of a row: `figure op limit`, for example ratio >= 5."""

    figure: str
    op: str
    limit: float

    def met_by(self, value: float) -> bool:
        """Return whether `value` meets the target."""
        return _OPERATORS[self.op](value, self.limit)

    def __str__(self) -> str:
        return f"{self.figure} {self.op} {self.limit:g}"


@dataclass
class Row:
    """One line of the result table.

    Attributes:
        group: the comparison (load, floor, memory, cold, build, forward, cli, jobs, gpu).
        case: the model or command measured.
        a_label, a_median, b_label, b_median: the two sides and their medians in `unit`.
        ratio: the median over rounds of the per-round ratio that `ratio_definition` names
            (for memory, the ratio of the medians).
        ratios: the per-round ratios; their quartiles go into `figures` as ratio_q1 and ratio_q3.
        figures: other derived figures, such as the per-round difference in seconds.
        target: the limit the row is judged by, or None for figures shown for information.
        status: PASS, FAIL, INFO, N/A (the zoo side cannot run here), ERROR or SKIP.
        samples: every round's measurement, per side.
    """

    group: str
    case: str
    a_label: str = ""
    a_median: float | None = None
    b_label: str = ""
    b_median: float | None = None
    unit: str = "s"
    ratio: float | None = None
    ratio_definition: str = ""
    ratios: list[float] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)
    target: Target | None = None
    status: str = INFO
    note: str = ""
    samples: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratios:
            self.ratio = median(self.ratios)
            first, third = quartiles(self.ratios)
            self.figures = {**self.figures, "ratio_q1": first, "ratio_q3": third}

    def judge(self) -> Row:
        """Set `status` from the target and the figure it limits; return the row."""
        if self.target is None:
            return self
        value = self.ratio if self.target.figure == "ratio" else self.figures.get(self.target.figure)
        if value is None:
            self.status = ERROR
            self.note = self.note or f"{self.target.figure} was not measured"
            return self
        self.status = PASS if self.target.met_by(value) else FAIL
        return self

    def to_json(self) -> dict[str, Any]:
        """Return the row as a JSON-ready mapping."""
        data = asdict(self)
        data["target"] = None if self.target is None else {**asdict(self.target), "text": str(self.target)}
        return data


def unmeasured_row(group: str, case: str, result: dict[str, Any], target: Target | None = None) -> Row | None:
    """Return an N/A or ERROR row when a worker could not measure, else None."""
    if "not_measurable" in result:
        return Row(group, case, target=target, status=NOT_MEASURABLE, note=result["not_measurable"])
    if "error" in result:
        return Row(group, case, target=target, status=ERROR, note=result["error"])
    return None


def load_rows(label: str, min_speedup: float, result: dict[str, Any]) -> list[Row]:
    """Return the rows of a load comparison: speed-up over the anchor, and the zoo's load against reading the file."""
    target = Target("ratio", ">=", min_speedup)
    failed = unmeasured_row("load", label, result, target)
    if failed is not None:
        return [failed]
    samples = result["samples"]
    zoo, anchor, read = samples["zoo"], samples["anchor"], samples["read"]
    speedup = Row(
        "load", label, "zoo load_model", median(zoo), "anchor build + load_state_dict", median(anchor),
        ratios=paired_ratios(anchor, zoo), ratio_definition="anchor / zoo",
        target=target, samples={"zoo": zoo, "anchor": anchor},
    ).judge()
    floor = Row(
        "floor", label, "zoo load_model", median(zoo), "read the file's bytes", median(read),
        ratios=paired_ratios(zoo, read), ratio_definition="zoo / read",
        note=f"checkpoint {result['checkpoint_bytes'] / 2**20:.1f} MiB",
        samples={"zoo": zoo, "read": read},
    )
    return [speedup, floor]


def memory_row(label: str, zoo_results: Sequence[dict[str, Any]], anchor_results: Sequence[dict[str, Any]]) -> Row:
    """Return the row of the peak resident memory a load adds, as a multiple of the checkpoint's size."""
    target = Target("ratio", "<=", MAX_MEMORY_RATIO)
    for result in [*zoo_results, *anchor_results]:
        failed = unmeasured_row("memory", label, result, target)
        if failed is not None:
            return failed
    size = zoo_results[0]["checkpoint_bytes"]
    zoo = [float(r["added_bytes"]) for r in zoo_results]
    anchor = [float(r["added_bytes"]) for r in anchor_results]
    anchor_ratio = median(anchor) / size
    peak_reset = all(r["peak_reset"] for r in [*zoo_results, *anchor_results])
    note = f"anchor adds {anchor_ratio:.2f}x; checkpoint {size / 2**20:.1f} MiB"
    if not peak_reset:
        note += "; the kernel did not allow resetting the peak, so the baseline is the peak before loading"
    return Row(
        "memory", label, "zoo peak added", median(zoo), "anchor peak added", median(anchor), unit="bytes",
        ratio=median(zoo) / size, ratio_definition="zoo added / checkpoint size",
        figures={"anchor_ratio": anchor_ratio, "checkpoint_bytes": float(size)},
        target=target, note=note, samples={"zoo": zoo, "anchor": anchor},
    ).judge()


def cold_load_row(label: str, zoo_results: Sequence[dict[str, Any]], anchor_results: Sequence[dict[str, Any]]) -> Row | None:
    """Return the row of first loads in fresh processes (no target), or None when the workers recorded no times."""
    results = [*zoo_results, *anchor_results]
    if any("seconds" not in result for result in results):
        return None
    zoo = [float(r["seconds"]) for r in zoo_results]
    anchor = [float(r["seconds"]) for r in anchor_results]
    return Row(
        "cold", label, "zoo first load", median(zoo), "anchor first load", median(anchor),
        ratios=paired_ratios(anchor, zoo), ratio_definition="anchor / zoo",
        note="one load per fresh process, after imports", samples={"zoo": zoo, "anchor": anchor},
    )


def build_row(label: str, result: dict[str, Any]) -> Row:
    """Return the row of build_model + save_model against the anchor's constructor plus 1.2 times a plain write."""
    target = Target("ratio", "<=", 1.0)
    failed = unmeasured_row("build", label, result, target)
    if failed is not None:
        return failed
    samples = result["samples"]
    build, constructor, write = samples["build"], samples["constructor"], samples["write"]
    budget = [c + WRITE_ALLOWANCE * w for c, w in zip(constructor, write, strict=True)]
    return Row(
        "build", label, "zoo build + save", median(build), f"constructor + {WRITE_ALLOWANCE:g} x write", median(budget),
        ratios=paired_ratios(build, budget), ratio_definition="build / budget",
        figures={"constructor_s": median(constructor), "write_s": median(write)},
        target=target,
        note=f"constructor {median(constructor):.2f} s, write+fsync {median(write):.2f} s",
        samples={**samples, "budget": budget},
    ).judge()


def forward_row(label: str, result: dict[str, Any], group: str = "forward", max_ratio: float = MAX_FORWARD_RATIO) -> Row:
    """Return the row of the zoo model's forward time against the anchor's, same weights."""
    target = Target("ratio", "<=", max_ratio)
    failed = unmeasured_row(group, label, result, target)
    if failed is not None:
        return failed
    zoo, anchor = result["samples"]["zoo"], result["samples"]["anchor"]
    return Row(
        group, label, "zoo backbone + head", median(zoo), "timm model", median(anchor),
        ratios=paired_ratios(zoo, anchor), ratio_definition="zoo / anchor",
        target=target, note=f"batch {result['batch_shape']}, {result['threads']} thread(s), fastest of {result.get('repeats', 1)} per round",
        samples={"zoo": zoo, "anchor": anchor},
    ).judge()


def gpu_load_row(label: str, result: dict[str, Any]) -> Row:
    """Return the row of loading onto the GPU: the zoo against the anchor's load followed by `.cuda()` (no target)."""
    failed = unmeasured_row("gpu", label, result)
    if failed is not None:
        return failed
    zoo, anchor = result["samples"]["zoo"], result["samples"]["anchor"]
    return Row(
        "gpu", f"load to {result['device']}: {label}", "zoo load_model(device=cuda)", median(zoo),
        "anchor load + .cuda()", median(anchor), ratios=paired_ratios(anchor, zoo),
        ratio_definition="anchor / zoo", samples={"zoo": zoo, "anchor": anchor},
    )


def cli_rows(result: dict[str, Any]) -> list[Row]:
    """Return the rows of `zoo --help` on its own and of `zoo build` over an unchanged zoo against it."""
    help_target = Target("help_s", "<", MAX_HELP_S)
    extra_target = Target("extra_s", "<=", MAX_UNCHANGED_BUILD_EXTRA_S)
    failed = unmeasured_row("cli", "zoo --help", result, help_target)
    if failed is not None:
        return [failed]
    help_s, build_s = result["samples"]["help"], result["samples"]["unchanged_build"]
    statuses = result.get("unchanged_statuses", [])

    cpu = result.get("cpu_samples", {})
    help_cpu = median(cpu["help"]) if cpu.get("help") else None
    help_row = Row(
        "cli", "zoo --help", "zoo --help", median(help_s), figures={"help_s": median(help_s)},
        target=help_target, samples={"help": help_s, "help_cpu": cpu.get("help", [])},
        note="" if help_cpu is None else f"CPU time (user + system) {help_cpu:.3g} s",
    ).judge()

    extra = [b - h for b, h in zip(build_s, help_s, strict=True)]
    note = f"{result.get('manifest_count', '?')} manifests, statuses {statuses}"
    if cpu.get("unchanged_build"):
        note += f", CPU time {median(cpu['unchanged_build']):.3g} s"
    if result.get("dropped"):
        note += f"; left out because they failed to build: {len(result['dropped'])}"
    build_row_ = Row(
        "cli", "zoo build, unchanged zoo", "zoo build", median(build_s), "zoo --help", median(help_s),
        ratios=paired_ratios(build_s, help_s), ratio_definition="build / help",
        figures={"extra_s": median(extra)}, target=extra_target, note=note,
        samples={"unchanged_build": build_s, "help": help_s},
    ).judge()
    # A build that did work is no measure of the no-op path.
    if statuses != ["up to date"]:
        build_row_.status = ERROR
        build_row_.note = f"the second build was not a no-op (statuses {statuses}); " + build_row_.note
    return [help_row, build_row_]


def jobs_row(result: dict[str, Any]) -> Row:
    """Return the row that checks that `zoo build -j N` built every manifest and reported a time for each."""
    failed = unmeasured_row("jobs", "zoo build -j N", result)
    if failed is not None:
        return failed
    build = result["parallel_build"]
    rows = build["rows"]
    built = [row for row in rows if row["status"] == "built"]
    total = sum(row["seconds"] for row in rows)
    works = build["exit_code"] == 0 and rows and len(built) == len(rows) and all(row["seconds"] > 0 for row in built)
    note = f"{len(built)} of {len(rows)} manifests built, exit status {build['exit_code']}"
    if not works and build["errors"]:
        note += f"; {build['errors'][-1]}"
    return Row(
        "jobs", f"zoo build -j {build['jobs']}", "wall time", build["wall_s"], "sum of per-manifest times", total,
        ratio=total / build["wall_s"], ratio_definition="sum / wall",
        status=PASS if works else FAIL, note=note,
    )
