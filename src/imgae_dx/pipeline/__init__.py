"""What the DVC stages do, one module per stage so that each stage depends on its own code.

``stages/<name>.py`` are thin entry points: :func:`stage_main` parses their arguments, loads
params.yaml through :func:`imgae_dx.config.load_params`, calls
``imgae_dx.pipeline.<name>.<name>`` and prints its summary as JSON; a user error is one line
(:func:`imgae_dx.errors.run`). ``docs/architecture.md``, "Layers".
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from imgae_dx.config import load_params
from imgae_dx.errors import run


def stage_main(
    stage: Callable[..., dict[str, Any]], *, per_arch: bool = False, doc: str | None = None
) -> int:
    """Run one stage as a command: ``python stages/<name>.py [<arch>] [--debug]``."""

    def main(argv: list[str]) -> int:
        ap = argparse.ArgumentParser(description=doc, epilog="--debug: show tracebacks")
        if per_arch:
            ap.add_argument("arch", help="architecture name (an entry of `models` in params.yaml)")
        args = ap.parse_args(argv)
        params = load_params()
        if per_arch and args.arch not in params.models:
            ap.error(f"params.yaml: models: {args.arch!r} is not listed (models: {params.models})")
        summary = stage(params, args.arch) if per_arch else stage(params)
        print(json.dumps(summary, indent=1))
        return 0

    return run(main, sys.argv[1:])
