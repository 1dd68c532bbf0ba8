"""What the DVC stages do, one module per stage so that each stage depends on its own code.

``stages/<name>.py`` are thin entry points: :func:`stage_main` parses their arguments, loads
params.yaml through :func:`imgae_dx.config.load_params`, calls
``imgae_dx.pipeline.<name>.<name>`` and prints its summary as JSON; a user error is one line
(:func:`imgae_dx.errors.run`). ``docs/architecture.md``, "Layers". ``train`` and ``score`` run
once per architecture and training seed: DVC matrix branches named by :func:`branch_name`.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from imgae_dx.config import load_params
from imgae_dx.errors import run


def branch_name(stage: str, arch: str, seed: int) -> str:
    """``train@ae-0``: the name DVC gives the matrix branch (``arch``, ``seed``) of ``stage``
    (dvc.yaml), and the name of its MLflow run."""
    return f"{stage}@{arch}-{int(seed)}"


def stage_main(
    stage: Callable[..., dict[str, Any]],
    *,
    per_arch: bool = False,
    per_seed: bool = False,
    doc: str | None = None,
) -> int:
    """Run one stage as a command: ``python stages/<name>.py [<arch> [<seed>]] [--debug]``."""

    def main(argv: list[str]) -> int:
        ap = argparse.ArgumentParser(description=doc, epilog="--debug: show tracebacks")
        if per_arch:
            ap.add_argument("arch", help="architecture name (an entry of `models` in params.yaml)")
        if per_seed:
            ap.add_argument("seed", type=int, help="training seed (an entry of `seeds`)")
        args = ap.parse_args(argv)
        params = load_params()
        if per_arch and args.arch not in params.models:
            ap.error(f"params.yaml: models: {args.arch!r} is not listed (models: {params.models})")
        if per_seed and args.seed not in params.seeds:
            ap.error(f"params.yaml: seeds: {args.seed} is not listed (seeds: {params.seeds})")
        where = [args.arch] if per_arch else []
        summary = stage(params, *where, *([args.seed] if per_seed else []))
        print(json.dumps(summary, indent=1))
        return 0

    return run(main, sys.argv[1:])
