"""Model cards: ``reports/model_cards/<arch>.md``, one per detector (Mitchell et al., FAT* 2019,
https://arxiv.org/abs/1810.03993). Pure text from the detector's ``meta``, the model's entry of
``reports/metrics.json`` and the caveats of ``reports/report.md``; no file I/O here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from imgae_dx.config import ReportParams
from imgae_dx.report.cells import fmt, table
from imgae_dx.report.serialize import ci_key

INTENDED_USE = (
    "Research on unsupervised anomaly detection in chest radiographs: comparing methods, "
    "studying failure modes, triaging films for a researcher to look at. **Research use only; "
    "not a medical device.** It is not validated for diagnosis, screening or any clinical "
    "decision, and its scores must not be shown to patients or used to treat them."
)


def report_caveats(report_md: str) -> list[str]:
    """The bullet points of report.md's "Caveats" section (the known limitations)."""
    m = re.search(r"^##[^\n]*Caveats[^\n]*\n(.*?)(?=^## |\Z)", report_md, flags=re.M | re.S)
    if not m:
        return []
    return [ln[2:].strip() for ln in m.group(1).splitlines() if ln.startswith("- ")]


def _ci(v: Any, ci: Sequence | None) -> str:
    if v is None:
        return "n/a"
    return f"{fmt(v)} [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else fmt(v)


def _training(meta: Mapping[str, Any]) -> list[str]:
    t = meta["training"]
    shards = ", ".join(t.get("shards") or []) or "n/a"
    lo, hi = t.get("film_sides", ["?", "?"])
    rows = [
        ("source", t.get("source")),
        ("shards", shards),
        ("views", ", ".join(t.get("views") or [])),
        ("training images", t.get("n_images")),
        ("training patients", t.get("n_patients")),
        ("training film sides (pixels)", f"{lo}-{hi}"),
        ("input size", f"{meta['preprocessing']['image_size']}²"),
    ]
    return ["## Training data", "", table(["", ""], rows)]


def _params(meta: Mapping[str, Any]) -> list[str]:
    t = meta["training"]
    p = t.get("params") or {}
    rows = [(k, v) for k, v in meta["model_args"].items()]
    rows += [(f"train.{k}", v) for k, v in (p.get("train") or {}).items()]
    rows += [(f"score.{k}", v) for k, v in meta["score_method"].items()]
    rows += [("seed", p.get("seed")), ("best epoch", t.get("best_epoch"))]
    rows += [("parameters", t.get("n_parameters"))]
    return ["## Parameters", "", table(["key", "value"], [(k, f"`{v}`") for k, v in rows])]


def _performance(meta: Mapping[str, Any], m: Mapping[str, Any], rp: ReportParams) -> list[str]:
    ck = ci_key(rp)
    thr = m.get("threshold") or {}
    level = f"{round(rp.ci * 100)} %"
    lines = ["## Test performance", ""]
    lines += [table(["metric", f"value [{level} CI, {rp.unit} bootstrap]"], [
        ("AUROC", _ci(m.get("auroc"), m.get(f"auroc_{ck}"))),
        ("AUPRC", _ci(m.get("auprc"), m.get(f"auprc_{ck}"))),
        ("test normals / abnormals", f"{m.get('n_normal')} / {m.get('n_abnormal')}"),
    ])]  # fmt: skip
    t = meta["threshold"]
    lines += [
        "",
        f"**Operating threshold** {t['value']:.6g}: the {t['percentile']:g}th percentile of "
        f"{t['n_val_normal']} validation normals' scores; a film scoring above it is flagged. "
        f"On test it gave sensitivity {fmt(thr.get('sensitivity'))} and specificity "
        f"{fmt(thr.get('specificity'))} ({thr.get('tp')} TP, {thr.get('fp')} FP, "
        f"{thr.get('tn')} TN, {thr.get('fn')} FN)."
        if thr
        else "Its test sensitivity and specificity are in report.md only for the seed ensemble "
        "(several training seeds); score the test films with `imgae-dx predict` for this seed's.",
    ]
    return lines


def _by_view(m: Mapping[str, Any], rp: ReportParams) -> list[str]:
    ck = ci_key(rp)
    rows = [
        (v, _ci(s.get("auroc"), s.get(f"auroc_{ck}")), fmt(s.get("sensitivity")),
         fmt(s.get("specificity")), s.get("n_normal"), s.get("n_abnormal"))
        for v, s in (m.get("by_view") or {}).items()
    ]  # fmt: skip
    head = ["view", "AUROC [CI]", "sensitivity", "specificity", "normals", "abnormals"]
    return ["## Per view (test)", "", table(head, rows) if rows else "No per-view figures."]


def model_card(
    meta: Mapping[str, Any], result: Mapping[str, Any] | None, caveats: Sequence[str],
    rp: ReportParams, path: str | os.PathLike, seeds: str = "",
) -> str:  # fmt: skip
    """The markdown card of the detector at ``path``; ``result``: the test figures of its model
    (:func:`imgae_dx.pipeline.cards.seed_figures`); ``seeds``: the section on every training
    seed's detector (:func:`seeds_section`), before the limitations."""
    arch = meta["arch"]
    m = result or {}
    seed = meta["training"].get("seed")
    lines = [
        f"# Model card: ImgAE-Dx detector `{arch}`"
        + (f" (training seed {seed})" if seed is not None else ""),
        "",
        f"Generated from `{path}`, `reports/metrics.json` and "
        "`reports/report.md` by the `cards` stage. Use it with "
        f"`imgae-dx predict {path} FILMS... --out DIR`.",
        "",
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "Input: one grayscale frontal chest film per file (PNG, JPEG or DICOM) of the views "
        "and roughly the sizes below; other films are refused with a reason.",
        "",
        *_training(meta),
        "",
        *_params(meta),
        "",
        *_performance(meta, m, rp),
        "",
        *_by_view(m, rp),
        "",
        *([seeds] if seeds else []),
        "## Known limitations",
        "",
        *(f"- {c}" for c in caveats),
        "- Out-of-distribution films (other views, children, devices, other hospitals' "
        "processing) shift the score distribution: the threshold and percentiles hold only for "
        "films like the validation normals.",
        "",
    ]
    return "\n".join(lines)


def _seed_row(
    seed: int, path: Any, meta: Mapping[str, Any], m: Mapping[str, Any], ck: str, arch: str
):
    thr = m.get("threshold") or {}
    return (
        seed, f"`{path}`", f"{meta['threshold']['value']:.6g}",
        _ci(m.get("auroc"), m.get(f"auroc_{ck}")), _ci(m.get("auprc"), m.get(f"auprc_{ck}")),
        fmt(thr.get("sensitivity")), fmt(thr.get("specificity")), f"`models:/imgae-dx-{arch}@seed{seed}`",
    )  # fmt: skip


def seeds_section(
    arch: str, rows: Sequence[tuple[int, Any, Mapping[str, Any], Mapping[str, Any]]],
    ensemble: Mapping[str, Any], rp: ReportParams,
) -> str:  # fmt: skip
    """The card's section on every training seed's detector (several seeds): ``rows`` of
    (seed, detector path, its ``meta``, its test figures as
    :func:`imgae_dx.pipeline.cards.seed_figures` gives them); ``ensemble``: the seed ensemble's
    entry of metrics.json's ``models`` plus ``spread``, its ``seeds`` block entry."""
    ck, level = ci_key(rp), f"{round(rp.ci * 100)} %"
    head = ["seed", "detector", "threshold", f"AUROC [{level} CI]", f"AUPRC [{level} CI]",
            "sensitivity", "specificity", "MLflow"]  # fmt: skip
    body = [_seed_row(k, p, meta, m, ck, arch) for k, p, meta, m in rows]
    thr, sp = ensemble.get("threshold") or {}, ensemble.get("spread") or {}
    body.append((
        "ensemble", "(not a detector)", f"{thr['value']:.6g}" if thr else "n/a",
        _ci(ensemble.get("auroc"), ensemble.get(f"auroc_{ck}")),
        _ci(ensemble.get("auprc"), ensemble.get(f"auprc_{ck}")),
        fmt(thr.get("sensitivity")), fmt(thr.get("specificity")), "",
    ))  # fmt: skip
    first = rows[0][0]
    lines = [
        "## Every training seed's detector",
        "",
        f"This architecture was trained once per seed; each seed's network is a detector of its "
        f"own, with its own threshold (the same percentile of its own validation normals). The "
        f"sections above describe seed {first}'s. Sensitivity and specificity: what each "
        "detector's threshold gave on the test films (`reports/scores/<arch>/seed<k>.csv`). "
        "The seed ensemble (per film, the mean of the seeds' scores; the report's figures) is "
        "not a detector. In MLflow, each seed's detector is a version of "
        f"`imgae-dx-{arch}` with alias `seed<k>`; `models:/imgae-dx-{arch}/latest` is seed "
        f"{first}'s.",
        "",
        table(head, body),
    ]
    if sp.get("auroc_mean") is not None:
        lines += [
            "",
            f"Over the {sp.get('n_seeds')} seeds: AUROC {fmt(sp['auroc_mean'])} ± "
            f"{fmt(sp.get('auroc_sd'))}, AUPRC {fmt(sp.get('auprc_mean'))} ± "
            f"{fmt(sp.get('auprc_sd'))} (mean ± sd).",
        ]
    return "\n".join(lines) + "\n"
