"""The whole pipeline in this process: each stage's library function, in DAG order, in a folder.

What ``dvc repro`` runs (``stages/<name>.py`` call these same functions) without DVC's start-up
and one interpreter per stage, so a rehearsal on a new data layout takes seconds. DVC's own
wiring is tested by ``tests/test_pipeline_integration.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from imgae_dx.config import Params
from imgae_dx.pipeline.check import check
from imgae_dx.pipeline.fetch import fetch
from imgae_dx.pipeline.prepare import prepare
from imgae_dx.pipeline.report import report
from imgae_dx.pipeline.score import score
from imgae_dx.pipeline.split import split
from imgae_dx.pipeline.train import train


def run_pipeline(workdir: Path, params: Params) -> dict[str, Any]:
    """Run check → fetch → split → prepare → train/score per model and seed → report in ``workdir``
    (created; the stages write ``data/``, ``models/`` and ``reports/`` under it); returns
    each stage's summary, JSON round-tripped as the stage scripts print it."""
    workdir.mkdir(parents=True, exist_ok=True)
    before = Path.cwd()
    os.chdir(workdir)
    try:
        out: dict[str, Any] = {}
        for name, stage in (("check", check), ("fetch", fetch), ("split", split)):
            out[name] = stage(params)
        out["prepare"] = prepare(params)
        for arch in params.models:
            for seed in params.seeds:
                out[f"train@{arch}-{seed}"] = train(params, arch, seed)
                out[f"score@{arch}-{seed}"] = score(params, arch, seed)
        out["report"] = report(params)
    finally:
        os.chdir(before)
    return json.loads(json.dumps(out, default=str))
