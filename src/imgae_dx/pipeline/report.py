"""DVC stage ``report``: metrics.json, plot points, figures and report.md; ``stages/report.py``."""

from __future__ import annotations

from typing import Any

from imgae_dx import paths, tracking
from imgae_dx.config import Params
from imgae_dx.report import headline_metrics, load_inputs, make_report
from imgae_dx.report.serialize import ci_key


def report(params: Params) -> dict[str, Any]:
    """Every output of the report stage under ``reports/``; returns each model's AUROC and its
    interval."""
    inputs = load_inputs(".", params.models, params.seeds)
    with tracking.start_run("report", params) as run:
        result = make_report(inputs, params, out_dir=paths.REPORTS)
        run.log_metrics(headline_metrics(result))
        run.log_artifact(paths.REPORT_MD)
        run.log_artifact(paths.METRICS)
    key = f"auroc_{ci_key(params.report)}"
    return {arch: {"auroc": m["auroc"], key: m.get(key)} for arch, m in result["models"].items()}
