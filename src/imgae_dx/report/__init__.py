"""The evaluation report: metrics.json, ROC/PR point files, figures and report.md.

``docs/architecture.md``, section "Report", describes the design. The package reads in the
order the report is made:

- :mod:`.inputs`: :func:`load_inputs` gathers the pipeline outputs (paths from
  :mod:`imgae_dx.paths`; only the score tables are required);
- :mod:`.analysis`: :func:`analyze` computes the typed results of :mod:`.results` (per model,
  stratum, comparison, training run), deciding the statistical unit once;
- :mod:`.serialize`: :func:`to_metrics`, the metrics.json contract;
- :mod:`.figures`, :mod:`.markdown` (one function per section) and :mod:`.caveats` (one per
  caveat) write the rest; :mod:`.names` holds the display names they share;
- :mod:`.make`: :func:`make_report` runs them all for the DVC stage ``report``.
"""

from imgae_dx.report.analysis import analyze
from imgae_dx.report.inputs import ModelMaps, ReportInputs, load_inputs, mean_image_val_mse
from imgae_dx.report.make import make_report
from imgae_dx.report.names import age_band_labels
from imgae_dx.report.results import Analysis
from imgae_dx.report.serialize import clean_json, headline_metrics, to_metrics

__all__ = [
    "Analysis",
    "ModelMaps",
    "ReportInputs",
    "age_band_labels",
    "analyze",
    "clean_json",
    "headline_metrics",
    "load_inputs",
    "make_report",
    "mean_image_val_mse",
    "to_metrics",
]
