"""DVC stage ``cards``: a model card per architecture, and every detector in MLflow's registry;
``stages/cards.py``.

Each card (``reports/model_cards/<arch>.md``, the stage's DVC outputs) describes in full the
detector of the first training seed, ``models/detectors/<arch>/seed<k>.pt`` with
``k = seeds[0]``; with several seeds it adds a table of every seed's detector (its threshold,
test AUROC/AUPRC with intervals and the sensitivity/specificity its own threshold gives on the
test films) and the seed ensemble's figures. With ``mlflow.enabled``, every seed's detector is
also logged as an MLflow pyfunc model (:mod:`imgae_dx.mlflow_model`: signature, input example,
the card as an artifact) and registered as a version of ``imgae-dx-<arch>``, tagged ``seed``
and aliased ``seed<k>``; the first seed's is registered last, so ``models:/imgae-dx-<arch>/latest``
is the detector the card describes in full. Like all logging, that never changes an output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from imgae_dx import metrics, paths, tracking
from imgae_dx.config import Params, ReportParams
from imgae_dx.detector import load_detector
from imgae_dx.errors import UserError
from imgae_dx.io import write_text
from imgae_dx.model_card import model_card, report_caveats, seeds_section


def cards(params: Params) -> dict[str, Any]:
    """``reports/model_cards/<arch>.md`` for every model; registered versions when logging."""
    result = _read_json(paths.METRICS)
    caveats = report_caveats(paths.REPORT_MD.read_text(encoding="utf-8"))
    seeds, rp = list(params.seeds), params.report
    metas: dict[str, dict[int, dict]] = {}
    for arch in params.models:
        metas[arch] = {k: load_detector(paths.detector(arch, k)).meta for k in seeds}
        figures = {k: seed_figures(result, arch, k, metas[arch][k], rp) for k in seeds}
        first = paths.detector(arch, seeds[0])
        rows = [(k, paths.detector(arch, k), metas[arch][k], figures[k]) for k in seeds]
        more = seeds_section(arch, rows, _ensemble(result, arch), rp) if len(seeds) > 1 else ""
        card = model_card(metas[arch][seeds[0]], figures[seeds[0]], caveats, rp, first, more)
        write_text(paths.model_card(arch), card)
    versions = {}
    with tracking.start_run("cards", params) as run:
        if run.active:
            versions = _register(run, metas)
    return {"cards": [str(paths.model_card(a)) for a in params.models], "registered": versions}


def seed_result(result: dict, arch: str, seed: int) -> dict | None:
    """The test figures of the model of training seed ``seed`` in metrics.json: ``models.<arch>``
    with one seed; with several (``models`` then holds the ensembles) its ``per_seed`` entry,
    AUROC/AUPRC only."""
    per_seed = ((result.get("seeds") or {}).get("models") or {}).get(arch, {}).get("per_seed")
    if per_seed is not None:
        return per_seed.get(str(seed))
    return (result.get("models") or {}).get(arch)


def seed_figures(result: dict, arch: str, seed: int, meta: dict, rp: ReportParams) -> dict:
    """:func:`seed_result`, completed where metrics.json has no operating point for this seed
    (several seeds) from the test films of ``reports/scores/<arch>/seed<k>.csv`` and the
    detector's own threshold, with the report's functions: the operating point
    (:func:`imgae_dx.metrics.operating_point`) and the per-view figures
    (:func:`imgae_dx.report.detection.strata`, bootstrap resamples keyed as the report's)."""
    from imgae_dx.report.detection import strata
    from imgae_dx.report.serialize import strata_json

    figures = dict(seed_result(result, arch, seed) or {})
    if figures.get("threshold"):
        return figures
    test = _test_scores(arch, seed)
    thr = float(meta["threshold"]["value"])
    point = metrics.operating_point(test["label"].to_numpy(), test["score"].to_numpy(), thr)
    figures["threshold"] = point
    figures.setdefault("n_normal", point["tn"] + point["fp"])
    figures.setdefault("n_abnormal", point["tp"] + point["fn"])
    figures["by_view"] = strata_json(strata(test, rp, thr, rp.unit).view, rp)
    return figures


def _test_scores(arch: str, seed: int) -> pd.DataFrame:
    path = paths.scores(arch, seed)
    try:
        df = pd.read_csv(path, dtype={"image": str, "patient_id": str})
        test = df[df["split"] == "test"].reset_index(drop=True)
        return test.assign(label=test["label"].astype(int), score=test["score"].astype(float))
    except (OSError, ValueError, KeyError) as e:
        raise UserError(f"{path}: unreadable test scores ({e}); rerun `dvc repro`") from e


def _ensemble(result: dict, arch: str) -> dict:
    """The seed ensemble's figures in metrics.json, with its mean ± sd over seeds."""
    spread = ((result.get("seeds") or {}).get("models") or {}).get(arch) or {}
    return {**((result.get("models") or {}).get(arch) or {}), "spread": spread}


def _register(run: tracking.Run, metas: dict[str, dict[int, dict]]) -> dict[str, dict]:
    """Every seed's detector as a version of ``imgae-dx-<arch>``, the first seed's last (so
    ``latest`` is it); ``{arch: {seed: version}}``."""
    versions: dict[str, dict] = {}
    for arch, by_seed in metas.items():
        first, *rest = list(by_seed)
        versions[arch] = {k: _register_one(run, arch, k, by_seed[k]) for k in [*rest, first]}
    return versions


def _register_one(run: tracking.Run, arch: str, seed: int, meta: dict) -> str | None:
    """Log seed ``seed``'s detector as a pyfunc model; register it, tagged and aliased."""
    from imgae_dx.mlflow_model import example_film, save_pyfunc

    with tempfile.TemporaryDirectory() as tmp:
        film = example_film(int(meta["training"]["film_sides"][1]))
        model_dir = save_pyfunc(Path(tmp) / "model", paths.detector(arch, seed),
                                paths.model_card(arch), film)  # fmt: skip
        return run.log_model(
            model_dir, f"detector_{arch}_seed{seed}", f"imgae-dx-{arch}",
            tags={"arch": arch, "seed": seed}, aliases=[f"seed{seed}"],
        )  # fmt: skip


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); rerun `dvc repro report`") from e
