"""The report as a text table, as Markdown, and the per-manifest times of the parallel build."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COLUMNS = ("group", "case", "A (median)", "B (median)", "ratio", "quartiles", "target", "status", "note")


def format_value(value: float | None, unit: str) -> str:
    """Format a median in seconds or bytes for a table cell."""
    if value is None:
        return "-"
    if unit == "bytes":
        return f"{value / 2**20:.1f} MiB"
    return f"{value:.3g} s"


def _cells(row: dict[str, Any]) -> list[str]:
    a = f"{row['a_label']}: {format_value(row['a_median'], row['unit'])}" if row["a_label"] else ""
    b = f"{row['b_label']}: {format_value(row['b_median'], row['unit'])}" if row["b_label"] else ""
    ratio = f"{row['ratio']:.3g} ({row['ratio_definition']})" if row["ratio"] is not None else ""
    figure = row["target"]["figure"] if row["target"] else "ratio"
    if figure != "ratio" and figure in row["figures"]:
        limited = f"{figure} = {row['figures'][figure]:.3g}"
        ratio = f"{limited}; {ratio}" if ratio else limited
    figures = row["figures"]
    spread = f"{figures['ratio_q1']:.3g}-{figures['ratio_q3']:.3g}" if "ratio_q1" in figures else ""
    target = row["target"]["text"] if row["target"] else ""
    return [row["group"], row["case"], a, b, ratio, spread, target, row["status"], row["note"]]


def _manifest_cells(build: dict[str, Any]) -> list[list[str]]:
    return [[r.get("name", r["manifest"]), r["status"], f"{r['seconds']:.2f}", r["size"]] for r in build["rows"]]


def text_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Align columns with spaces, one line per row."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *lines)]
    rendered = ["  ".join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip() for line in [header, *lines]]
    rendered.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(rendered)


def markdown_table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Render a GitHub Markdown table."""
    rendered = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    rendered += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in line) + " |" for line in lines]
    return "\n".join(rendered)


def _machine_line(report: dict[str, Any]) -> str:
    machine = report["machine"]
    memory = f"{machine['memory_bytes'] / 2**30:.1f} GiB RAM" if machine["memory_bytes"] else "RAM unknown"
    versions = ", ".join(f"{name} {version}" for name, version in machine["versions"].items())
    line = f"{machine['cpus']} CPUs ({machine['cpu_model']}), {memory}, Python {machine['python']}; {versions}"
    start, end = machine.get("load_average_start"), machine.get("load_average_end")
    if start and end:
        line += f"; 1-minute load average {start[0]:.1f} at the start, {end[0]:.1f} at the end"
    return line


def render(report: dict[str, Any], markdown: bool = False) -> str:
    """Render the whole report: machine, result table, and the parallel build's per-manifest times."""
    table = markdown_table if markdown else text_table
    parts = [f"Machine: {_machine_line(report)}", "", table(COLUMNS, [_cells(row) for row in report["rows"]])]
    build = report.get("parallel_build")
    if build:
        parts += [
            "",
            f"zoo build -j {build['jobs']}: {build['wall_s']:.1f} s wall time, exit status {build['exit_code']}",
            "",
            table(("manifest", "status", "seconds", "size"), _manifest_cells(build)),
        ]
    parts += ["", f"Benchmark wall time: {report['wall_s']:.0f} s; rows failed or in error: {report['failed']}"]
    return "\n".join(parts)
