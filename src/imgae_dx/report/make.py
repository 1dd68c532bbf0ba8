"""``make_report``: the analysis, then every output of the report stage, each written atomically."""

from __future__ import annotations

import os
from pathlib import Path

from imgae_dx import paths
from imgae_dx.config import Params
from imgae_dx.io import write_csv, write_json, write_text
from imgae_dx.report import figures
from imgae_dx.report.analysis import analyze
from imgae_dx.report.inputs import ReportInputs
from imgae_dx.report.markdown import render_markdown
from imgae_dx.report.serialize import to_headline, to_metrics


def make_report(
    inputs: ReportInputs, params: Params, out_dir: str | os.PathLike = paths.REPORTS
) -> dict:
    """Compute the metrics and write, under ``out_dir``: metrics.json, headline.json,
    plots/{roc,pr}/<arch>.csv, figures/{roc,pr,score_dist,gallery,train_curves}.png,
    report.md and, when the issues files were read, data_issues.csv. Returns the metrics dict
    (the contents of metrics.json)."""
    out = Path(out_dir)
    an = analyze(inputs, params)
    roc, pr = figures.plot_points(an)
    figures.write_plot_points(out, roc, pr)
    figures.write_figures(an, inputs, out, roc, pr)
    # the samples figure (written by the fetch stage) is linked when it is there
    samples = paths.samples_figure(an.data.source).relative_to(paths.REPORTS)
    markdown = render_markdown(
        an,
        params,
        curves=list(inputs.train_curves),
        samples_figure=samples.as_posix() if (out / samples).is_file() else None,
    )
    result = to_metrics(an)
    if inputs.issues is not None:
        write_csv(out / paths.DATA_ISSUES.relative_to(paths.REPORTS), inputs.issues)
    write_text(out / paths.REPORT_MD.relative_to(paths.REPORTS), markdown)
    write_json(out / paths.METRICS.relative_to(paths.REPORTS), result)
    write_json(out / paths.HEADLINE.relative_to(paths.REPORTS), to_headline(result, params.report))
    return result
