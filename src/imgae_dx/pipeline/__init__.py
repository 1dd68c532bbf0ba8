"""What the DVC stages do, one module per stage so that each stage depends on its own code.

``stages/<name>.py`` are thin entry points: they load params.yaml through
:func:`imgae_dx.config.load_params` and call ``imgae_dx.pipeline.<name>.<name>``
(``docs/architecture.md``, "Layers").
"""

from __future__ import annotations

import argparse

from imgae_dx.config import Params


def arch_argument(params: Params, description: str | None) -> str:
    """The ``<arch>`` argument of a per-architecture stage, checked against ``models``."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("arch", help="architecture name (an entry of `models` in params.yaml)")
    arch = ap.parse_args().arch
    if arch not in params.models:
        ap.error(f"params.yaml: models: {arch!r} is not listed (models: {params.models})")
    return arch
