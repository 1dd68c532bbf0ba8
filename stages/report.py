"""DVC stage `report`: metrics.json, ROC/PR point files, figures and report.md.

Reads params.yaml (keys: models, report, data.source; the setup table also shows seed, data,
train, score and arch.<model>) and the outputs of the split, prepare, train@<arch> and
score@<arch> stages; all logic lives in imgae_dx.report.
"""

from __future__ import annotations

import sys

from imgae_dx import config, paths, report, tracking


def main() -> int:
    params = config.load_params()
    inputs = report.load_inputs(".", params.models)
    with tracking.start_run("report", params) as run:
        result = report.make_report(inputs, params, out_dir=paths.REPORTS)
        run.log_metrics(report.headline_metrics(result))
        run.log_artifact(paths.REPORT_MD)
        run.log_artifact(paths.METRICS)
    ck = params.report.ci_key
    for arch, m in result["models"].items():
        print(f"{arch}: AUROC {m['auroc']}  {m.get(f'auroc_{ck}')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
