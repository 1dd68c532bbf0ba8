"""DVC stage `report`: metrics.json, ROC/PR point files, figures and report.md.

Reads params.yaml (keys: models, report, data.source; the setup table also shows seed, data,
train, score and arch.<model>) and the outputs of the split, prepare, train@<arch> and
score@<arch> stages; all logic lives in imgae_dx.report.
"""

from __future__ import annotations

import sys

import yaml

from imgae_dx import report, tracking


def main() -> int:
    with open("params.yaml", encoding="utf-8") as fh:
        params = yaml.safe_load(fh) or {}
    inputs = report.load_inputs(".", params.get("models") or [])
    with tracking.start_run("report", params) as run:
        result = report.make_report(inputs, params, out_dir="reports")
        run.log_metrics(report.headline_metrics(result))
        run.log_artifact("reports/report.md")
        run.log_artifact("reports/metrics.json")
    for arch, m in result["models"].items():
        print(f"{arch}: AUROC {m['auroc']}  {m.get('auroc_ci95')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
