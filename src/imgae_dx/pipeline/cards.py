"""DVC stage ``cards``: a model card per architecture, and the detectors in MLflow's registry;
``stages/cards.py``.

Each card (``reports/model_cards/<arch>.md``, the stage's DVC outputs) and each registered
model describe the detector of the first training seed, ``models/detectors/<arch>/seed<k>.pt``
with ``k = seeds[0]``. With
``mlflow.enabled``, each detector is also logged as an MLflow pyfunc model
(:mod:`imgae_dx.mlflow_model`: signature, input example, its card as an artifact) and
registered as ``imgae-dx-<arch>``; like all logging, that never changes an output.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from imgae_dx import paths, tracking
from imgae_dx.config import Params
from imgae_dx.detector import load_detector
from imgae_dx.errors import UserError
from imgae_dx.io import write_text
from imgae_dx.model_card import model_card, report_caveats


def cards(params: Params) -> dict[str, Any]:
    """``reports/model_cards/<arch>.md`` for every model; registered versions when logging."""
    result = _read_json(paths.METRICS)
    caveats = report_caveats(paths.REPORT_MD.read_text(encoding="utf-8"))
    metas = {}
    seed = params.seeds[0]
    for arch in params.models:
        metas[arch] = load_detector(paths.detector(arch, seed)).meta
        figures = seed_result(result, arch, seed)
        card = model_card(metas[arch], figures, caveats, params.report, paths.detector(arch, seed))
        write_text(paths.model_card(arch), card)
    versions = {}
    with tracking.start_run("cards", params) as run:
        if run.active:
            versions = _register(run, metas, seed)
    return {"cards": [str(paths.model_card(a)) for a in params.models], "registered": versions}


def seed_result(result: dict, arch: str, seed: int) -> dict | None:
    """The test figures of the model of training seed ``seed`` in metrics.json: ``models.<arch>``
    with one seed; with several (``models`` then holds the ensembles) its ``per_seed`` entry,
    AUROC/AUPRC only."""
    per_seed = ((result.get("seeds") or {}).get("models") or {}).get(arch, {}).get("per_seed")
    if per_seed is not None:
        return per_seed.get(str(seed))
    return (result.get("models") or {}).get(arch)


def _register(run: tracking.Run, metas: dict[str, dict], seed: int) -> dict[str, str | None]:
    from imgae_dx.mlflow_model import example_film, save_pyfunc

    versions = {}
    for arch, meta in metas.items():
        with tempfile.TemporaryDirectory() as tmp:
            film = example_film(int(meta["training"]["film_sides"][1]))
            model_dir = save_pyfunc(Path(tmp) / "model", paths.detector(arch, seed),
                                    paths.model_card(arch), film)  # fmt: skip
            versions[arch] = run.log_model(model_dir, f"detector_{arch}", f"imgae-dx-{arch}")
    return versions


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({e}); rerun `dvc repro report`") from e
