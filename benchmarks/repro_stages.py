"""Time each stage of a ``dvc repro`` in a workspace: the default ``make repro`` split by stage.

Runs ``dvc repro [ARGS...]`` in ``--workspace`` (its stage commands call ``python``, so the
project's environment must come first in ``PATH``), stamps every line DVC prints, and charges
the time from one ``Running stage '<name>':`` line to the next (or to the end) to that stage:
its command plus DVC's own hashing and caching of its outputs. The time before the first stage
(DVC reading the pipeline and checking what changed) is ``dvc (planning)``. Stages DVC skipped as
unchanged do not appear.

    python benchmarks/repro_stages.py --workspace /tmp/ws --out benchmarks/results/repro.json
    python benchmarks/repro_stages.py --workspace /tmp/ws -- --force train@ra   # one stage
    python benchmarks/repro_stages.py --workspace /tmp/fresh-clone --make   # `make repro`

The JSON (``{"machine": ..., "total_s": ..., "stages": [{"stage", "seconds"}], ...}``) is what
``benchmarks/report.py`` turns into BENCHMARKS.md's repro table. The machine is described in the
file (CPU, cores, load average before and after): on a shared machine the figures are not
those of a quiet one.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402

STAGE_LINE = re.compile(r"^Running stage '([^']+)'")
#: The last line of ``make env`` (Makefile): with ``--make``, the time before it is the
#: environment step's.
ENV_READY = ">> environment ready"


def stage_times(lines: Iterable[tuple[float, str]], end: float) -> list[dict]:
    """Per-stage seconds from (timestamp, line) pairs of ``dvc repro``'s output.

    The first entry is ``dvc (planning)`` (start to the first stage line; the first pair's time
    is the start). Pure: the clock is in the pairs.
    """
    pairs = list(lines)
    if not pairs:
        return []
    rows: list[dict] = []
    env = any(line.startswith(ENV_READY) for _, line in pairs)
    current, since = ("make env" if env else "dvc (planning)"), pairs[0][0]
    for t, line in pairs:
        match = STAGE_LINE.match(line.strip())
        if match or line.startswith(ENV_READY):
            rows.append({"stage": current, "seconds": round(t - since, 2)})
            current, since = (match.group(1) if match else "dvc (planning)"), t
    rows.append({"stage": current, "seconds": round(end - since, 2)})
    return rows


def run_repro(command: list[str], workspace: Path) -> tuple[list[dict], float, int]:
    """Run ``command`` (``dvc repro ...`` or ``make repro``) in ``workspace``, echoing its
    output: (stage rows, total s, exit code)."""
    t0 = time.perf_counter()
    stamped = [(t0, "")]
    proc = subprocess.Popen(
        command,
        cwd=workspace,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        stamped.append((time.perf_counter(), line))
        sys.stdout.write(line)
    rc = proc.wait()
    end = time.perf_counter()
    return stage_times(stamped, end), end - t0, rc


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--workspace", type=Path, required=True, help="a checkout of the project")
    ap.add_argument("--dvc", default="dvc", help="the dvc executable")
    ap.add_argument("--label", default="dvc repro", help="what the run was, for the table")
    ap.add_argument("--out", type=Path, default=None, help="JSON results (default: print)")
    ap.add_argument(
        "--make", action="store_true",
        help="run `make repro` (environment step included, timed as `make env`) instead",
    )  # fmt: skip
    ap.add_argument("dvc_args", nargs="*", help="after --: arguments to dvc repro")
    args = ap.parse_args()
    before = describe_machine()
    command = ["make", "repro"] if args.make else [args.dvc, "repro", *args.dvc_args]
    rows, total, rc = run_repro(command, args.workspace.resolve())
    result = {
        "label": args.label,
        "command": "make repro" if args.make else " ".join(["dvc", "repro", *args.dvc_args]),
        "machine": before,
        "load_after": describe_machine()["loadavg"],
        "total_s": round(total, 2),
        "exit_code": rc,
        "stages": rows,
    }
    text = json.dumps(result, indent=2)
    if args.out is None:
        print(text)
    else:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    for r in rows:
        print(f"{r['stage']:<20} {r['seconds']:>8.1f} s", file=sys.stderr)
    print(f"{'total':<20} {total:>8.1f} s (exit {rc})", file=sys.stderr)
    sys.exit(rc)


if __name__ == "__main__":
    main()
