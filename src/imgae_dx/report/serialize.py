"""The contract of ``reports/metrics.json`` and ``reports/headline.json``: the one module that
names their keys.

:func:`to_metrics` turns an :class:`~imgae_dx.report.results.Analysis` into the metrics dict,
key by key in the order metrics.json has always had (``imgae-dx check-metrics`` compares files
across runs). :func:`to_headline` picks from it the few dozen numbers DVC tracks as the
stage's metrics (``dvc exp show``, ``dvc metrics diff``); :func:`headline_model_keys` names
the per-model ones. Interval keys carry the level
(``auroc_ci95``), the threshold-sweep keys their targets (``sens_at_95spec``): see
:class:`imgae_dx.config.ReportParams`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from imgae_dx.config import ReportParams
from imgae_dx.report.names import DELONG_METHOD
from imgae_dx.report.results import (
    Analysis,
    Baseline,
    ComparisonResult,
    DataSummary,
    Interval,
    Localization,
    ModelResult,
    OperatingPoint,
    SeedSpread,
    Stratum,
    TrainingResult,
)


def ci_key(rp: ReportParams) -> str:
    """``ci95`` at the default level: the suffix of every interval key (``auroc_ci95``)."""
    return f"ci{round(rp.ci * 100):d}"


def sens_key(rp: ReportParams) -> str:
    """``sens_at_95spec``: sensitivity at the target specificity."""
    return f"sens_at_{round(rp.target_specificity * 100):d}spec"


def spec_key(rp: ReportParams) -> str:
    """``spec_at_95sens``: specificity at the target sensitivity."""
    return f"spec_at_{round(rp.target_sensitivity * 100):d}sens"


def _round(f: float, ndigits: int) -> float | None:
    return float(f"{f:.{ndigits}g}") if np.isfinite(f) else None


def clean_json(obj: Any, ndigits: int = 6) -> Any:
    """numpy -> Python, floats to ``ndigits`` significant digits (small p-values survive),
    NaN/inf -> None (JSON null), tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [clean_json(v, ndigits) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return _round(float(obj), ndigits)
    return obj


def rounded(obj: Any, ndigits: int = 6) -> Any:
    """A result with every float rounded as :func:`clean_json` rounds it (dataclasses, dicts
    and tuples keep their types), so report.md prints exactly the numbers of metrics.json."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {f.name: rounded(getattr(obj, f.name), ndigits) for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, Mapping):
        return {k: rounded(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(rounded(v, ndigits) for v in obj)
    return clean_json(obj, ndigits)


def _ci(ci: Interval | None) -> list | None:
    return list(ci) if ci is not None else None


def _stratum(s: Stratum, ck: str) -> dict:
    out = {
        "auroc": s.auroc,
        f"auroc_{ck}": _ci(s.auroc_ci),
        "n_normal": s.n_normal,
        "n_abnormal": s.n_abnormal,
    }
    if s.at_threshold is not None:  # the model has an operating threshold
        out["sensitivity"] = s.at_threshold.sensitivity
        out["specificity"] = s.at_threshold.specificity
    return out


def _strata(by: Mapping[str, Stratum], ck: str) -> dict:
    return {k: _stratum(v, ck) for k, v in by.items()}


def strata_json(by: Mapping[str, Stratum], rp: ReportParams) -> dict:
    """Strata as metrics.json writes them (``by_view``...): for the model cards."""
    return _strata(by, ci_key(rp))


def _threshold(t: OperatingPoint) -> dict:
    out = {
        "source": "val normals",
        "percentile": t.percentile,
        "value": t.value,
        "n_val_normal": t.n_val_normal,
    }
    if t.value is None:  # no validation normals: no threshold
        return out
    return out | {
        "val_flagged": t.val_flagged,
        "sensitivity": t.sensitivity,
        "specificity": t.specificity,
        "precision": t.precision,
        "f1": t.f1,
        "tp": t.tp,
        "fp": t.fp,
        "tn": t.tn,
        "fn": t.fn,
    }


def _localization(loc: Localization) -> dict:
    by_f = {f: {"hit_rate": h.hit_rate, "n_images": h.n_images} for f, h in loc.by_finding.items()}
    return {
        "hit_rate": loc.hit_rate,
        "chance_hit_rate": loc.chance_hit_rate,
        "pixel_auroc": loc.pixel_auroc,
        "n_images": loc.n_images,
        "n_boxes": loc.n_boxes,
        "by_finding": by_f,
    }


def _model(m: ModelResult, rp: ReportParams) -> dict:
    ck = ci_key(rp)
    return {
        "auroc": m.auroc,
        f"auroc_{ck}": _ci(m.auroc_ci),
        f"auroc_{ck}_delong": _ci(m.auroc_ci_delong),
        "auprc": m.auprc,
        f"auprc_{ck}": _ci(m.auprc_ci),
        "f1_max": m.f1_max,
        sens_key(rp): m.sens_at_spec,
        spec_key(rp): m.spec_at_sens,
        "n_normal": m.n_normal,
        "n_abnormal": m.n_abnormal,
        "threshold": _threshold(m.threshold),
        "score_method": dict(m.score_method),
        "by_view": _strata(m.strata.view, ck),
        "by_sex": _strata(m.strata.sex, ck),
        "by_age": _strata(m.strata.age, ck),
        "by_finding": _strata(m.strata.finding, ck),
        "localization": _localization(m.localization),
    }


def _baseline(b: Baseline, ck: str) -> dict:
    return {
        "auroc": b.auroc,
        f"auroc_{ck}": _ci(b.auroc_ci),
        "n_normal": b.n_normal,
        "n_abnormal": b.n_abnormal,
    }


def _comparison(c: ComparisonResult, ck: str) -> dict:
    if c.delong is None:
        return {
            "delta_auroc": None,
            f"delta_auroc_{ck}": None,
            "p_delong": None,
            "p_holm": None,
            "n": c.n,
        }
    return {
        "delta_auroc": c.delong.delta,
        f"delta_auroc_{ck}": _ci(c.delta_ci),
        f"delta_auroc_{ck}_delong": _ci(c.delong.ci),
        "z_delong": c.delong.z,
        "p_delong": c.delong.p,
        "p_holm": c.p_holm,
        "n": c.n,
    }


def _data(d: DataSummary) -> dict:
    return {
        "source": d.source,
        "n_train": d.n_train,
        "n_val": d.n_val,
        "n_test_normal": d.n_test_normal,
        "n_test_abnormal": d.n_test_abnormal,
        "n_test_patients": d.n_test_patients,
        "n_repaired": d.n_repaired,
        "n_excluded": d.n_excluded,
    }


def _training_run(r: TrainingResult) -> dict:
    return {
        "epochs_run": r.epochs_run,
        "best_epoch": r.best_epoch,
        "initial_val_loss": r.initial_val_loss,
        "best_val_loss": r.best_val_loss,
        "best_over_initial": r.best_over_initial,
        "best_over_reference": r.best_over_reference,
    }


def _seed_spread(sp: SeedSpread, ck: str) -> dict:
    per_seed = {
        str(r.seed): {
            "auroc": r.auroc,
            f"auroc_{ck}": _ci(r.auroc_ci),
            "auprc": r.auprc,
            f"auprc_{ck}": _ci(r.auprc_ci),
        }
        for r in sp.runs
    }
    return {
        "auroc_mean": sp.auroc_mean,
        "auroc_sd": sp.auroc_sd,
        "auprc_mean": sp.auprc_mean,
        "auprc_sd": sp.auprc_sd,
        "n_seeds": len(sp.runs),
        "per_seed": per_seed,
    }


def _seeds(an: Analysis, ck: str) -> dict:
    """The training seeds (only with several: ``models`` then holds the seed ensembles)."""
    return {
        "seeds": list(an.seeds),
        "ensemble": "per-image mean score over seeds",
        "models": {a: _seed_spread(sp, ck) for a, sp in an.by_seed.items()},
    }


def to_metrics(an: Analysis) -> dict:
    """The metrics.json dict of an analysis (JSON types only, numbers as :func:`clean_json`)."""
    rp, ck = an.params, ci_key(an.params)
    out = {
        "data": _data(an.data),
        "models": {a: _model(m, rp) for a, m in an.models.items()},
        "baselines": {name: _baseline(b, ck) for name, b in an.baselines.items()},
        "comparisons": {f"{c.a}_vs_{c.b}": _comparison(c, ck) for c in an.comparisons},
        "bootstrap": {"unit": an.unit, "resamples": rp.bootstrap, "seed": rp.seed},
        "delong": {"unit": an.unit, "method": DELONG_METHOD[an.unit]},
        "training": {
            "reference_val_mse": an.training.reference_val_mse,
            "models": {a: _training_run(r) for a, r in an.training.models.items()},
        },
    }
    if len(an.seeds) > 1:
        out["seeds"] = _seeds(an, ck)
    return clean_json(out)


def headline_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The pooled scalars of a metrics dict (no strata, no lists), e.g. for MLflow."""
    out: dict[str, Any] = {"models": {}, "baselines": {}, "comparisons": {}}
    for arch, m in result["models"].items():
        out["models"][arch] = {k: v for k, v in m.items() if isinstance(v, int | float)}
        thr = m.get("threshold") or {}
        out["models"][arch]["threshold"] = {
            k: v for k, v in thr.items() if isinstance(v, int | float) and k != "percentile"
        }
    for name, b in result.get("baselines", {}).items():
        out["baselines"][name] = {"auroc": b.get("auroc")}
    for key, c in result.get("comparisons", {}).items():
        out["comparisons"][key] = {
            k: c.get(k) for k in ("delta_auroc", "z_delong", "p_delong", "p_holm")
        }
    return out


#: The validation-normal loss of the selected checkpoint in the headline: what
#: ``imgae-dx select`` ranks experiments by (never a test metric).
VAL_LOSS = "val_loss"


def headline_model_keys(rp: ReportParams) -> tuple[str, ...]:
    """The per-model keys of the headline, in order: pooled test AUROC and its interval,
    AUPRC, sensitivity at the target specificity, and the validation-normal loss."""
    ck = ci_key(rp)
    return ("auroc", f"auroc_{ck}_lo", f"auroc_{ck}_hi", "auprc", sens_key(rp), VAL_LOSS)


#: Per-model keys the headline adds from metrics.json's ``seeds`` block (several seeds only).
HEADLINE_SEED_KEYS = ("auroc_mean", "auroc_sd", "auprc_mean", "auprc_sd")


def _val_loss(arch: str, training: Mapping[str, Any]) -> float | None:
    """The selected validation loss of ``arch``: its run's, or the mean over its training
    seeds' runs (``<arch>/seed<k>``) when there are several."""
    runs = [r for k, r in training.items() if k == arch or k.startswith(f"{arch}/seed")]
    losses = [r.get("best_val_loss") for r in runs]
    if not losses or any(v is None for v in losses):
        return None
    return float(np.mean(losses))


def _headline_model(arch: str, result: Mapping[str, Any], rp: ReportParams) -> dict:
    m = result["models"][arch]
    training = (result.get("training") or {}).get("models") or {}
    ci = m.get(f"auroc_{ci_key(rp)}") or [None, None]
    values = (m.get("auroc"), ci[0], ci[1], m.get("auprc"), m.get(sens_key(rp)))
    out = dict(zip(headline_model_keys(rp), (*values, _val_loss(arch, training)), strict=True))
    spread = ((result.get("seeds") or {}).get("models") or {}).get(arch) or {}
    return out | {k: spread[k] for k in HEADLINE_SEED_KEYS if k in spread}


def to_headline(result: Mapping[str, Any], rp: ReportParams) -> dict:
    """``reports/headline.json``, the DVC metrics of the report stage, from a metrics dict.

    One flat block per model (``<arch>``: :func:`headline_model_keys`, then, with several
    training seeds, :data:`HEADLINE_SEED_KEYS`; the model's numbers are then the seed
    ensemble's and ``val_loss`` the mean over seeds; an interval is two scalars, ``_lo`` and
    ``_hi``, so that ``dvc metrics diff`` compares it) and one per comparison
    (``<a>_vs_<b>``: ``delta_auroc``, ``p_holm``), at the top level so that the columns of
    ``dvc exp show`` stay short (``ae.auroc``).
    """
    out = {a: _headline_model(a, result, rp) for a in result["models"]}
    for k, c in (result.get("comparisons") or {}).items():
        out[k] = {"delta_auroc": c.get("delta_auroc"), "p_holm": c.get("p_holm")}
    return clean_json(out)


def headline_val_losses(headline: Mapping[str, Any]) -> dict[str, float | None]:
    """``{arch: val_loss}`` of a headline dict: its model blocks are those with
    :data:`VAL_LOSS` (comparison blocks have none)."""
    return {
        k: v.get(VAL_LOSS) for k, v in headline.items() if isinstance(v, Mapping) and VAL_LOSS in v
    }
