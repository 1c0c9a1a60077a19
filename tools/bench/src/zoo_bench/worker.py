"""Run one comparison in this process: `python -m zoo_bench.worker SPEC.json RESULT.json`.

The spec names the kind of comparison and its case; the result file gets
the raw measurements, or `not_measurable` with the reason.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .cases import ModelCase


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the comparison a spec describes and return its measurements."""
    from . import pairs
    from .zoo_cli import measure_zoo_cli
    from .zoo_side import NotMeasurableError

    kind = spec["kind"]
    workdir = Path(spec["workdir"])
    rounds = spec.get("rounds", 1)
    case = ModelCase.from_json(spec["case"]) if "case" in spec else None
    try:
        if kind == "zoo_cli":
            return measure_zoo_cli(
                Path(spec["manifests"]), workdir, spec["jobs"], rounds, spec["fresh_build"], spec["time_commands"]
            )
        if case is None:
            raise ValueError(f"a {kind!r} spec needs a case")
        if kind == "prepare":
            return pairs.prepare(case, workdir)
        if kind == "load":
            return pairs.measure_load(case, rounds, workdir)
        if kind == "memory":
            return pairs.measure_memory(case, spec["side"], workdir)
        if kind == "build":
            return pairs.measure_build(case, rounds, workdir)
        if kind == "forward":
            return pairs.measure_forward(case, rounds, spec["threads"], spec["repeats"])
        if kind == "gpu_load":
            return pairs.measure_gpu_load(case, rounds, workdir)
        if kind == "gpu_forward":
            return pairs.measure_gpu_forward(case, rounds)
    except NotMeasurableError as error:
        return {"not_measurable": str(error)}
    raise ValueError(f"unknown comparison kind {kind!r}")


def main(argv: list[str] | None = None) -> None:
    """Read the spec file, run it, write the result file."""
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 2:
        sys.exit("usage: python -m zoo_bench.worker SPEC.json RESULT.json")
    spec_path, result_path = map(Path, arguments)
    result = run_spec(json.loads(spec_path.read_text()))
    result_path.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
