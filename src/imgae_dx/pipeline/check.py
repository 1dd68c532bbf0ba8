"""DVC stage ``check``: params.yaml and what it points at, before any stage deletes an output.

DVC removes a stage's outputs just before it runs the stage's command, so a mistake found by
the stage itself has already cost its outputs. This stage runs first (every other stage
depends on its output) and its command fails on a mistake; DVC then stops before any other
stage runs (``docs/architecture.md``, "DAG"). It checks:

- the whole file against the schema (:func:`imgae_dx.config.load_params`, already done by the
  stage entry point): types, ranges, unknown keys anywhere, each constructor on the meta device;
- what the params point at outside the repository: ``data.local.root`` (a folder with the NIH
  metadata), ``data.medianomaly.root`` (``data.json`` and ``images/``), Kaggle credentials for
  ``data.source: kaggle`` (found, not sent), the LPIPS weights file when the RA map needs it,
  an explicit ``train.device`` that this machine has.

Its output never changes (a fixed line), so a successful check reruns nothing downstream.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from imgae_dx import paths
from imgae_dx.config import ConfigError, Params
from imgae_dx.data import nih
from imgae_dx.errors import UserError
from imgae_dx.io import write_text

MARK = "params.yaml checked\n"


def check(params: Params) -> dict[str, Any]:
    """Fail with one line naming the key if ``params`` points at something missing."""
    checked = ["schema"]
    for name, fn in (
        ("data source", _data_source),
        ("lpips weights", _lpips_weights),
        ("device", _device),
    ):
        if fn(params):
            checked.append(name)
    write_text(paths.CHECKED, MARK)
    return {"checked": checked}


def _data_source(params: Params) -> bool:
    data = params.data
    if data.source == "local":
        root = data.local.root
        if not root or not Path(root).expanduser().is_dir():
            raise ConfigError(
                f"params.yaml: data.local.root: {root!r} is not a folder (point it at an NIH "
                "download: the Kaggle layout or the official images_NN.tar.gz archives)"
            )
        meta = Path(root).expanduser()
        if not any((meta / f).is_file() for f in (nih.DATA_ENTRY, "Data_Entry_2017_v2020.csv")):
            raise ConfigError(
                f"params.yaml: data.local.root: {meta} has no {nih.DATA_ENTRY} (the NIH "
                "metadata files belong next to the images)"
            )
        return True
    if data.source == "medianomaly":
        from imgae_dx.data.sources.medianomaly import check_root

        try:
            check_root(data.medianomaly.root)
        except UserError as e:
            raise ConfigError(f"params.yaml: {e}") from None
        return True
    if data.source == "kaggle":
        from imgae_dx.data.sources import credentials

        # Raises CredentialsError (one line, where to put them); no request is sent.
        credentials.find(data.kaggle.endpoint, exchange=False)
        return True
    return False


def _lpips_weights(params: Params) -> bool:
    score = params.score
    if score.saliency != "lpips" or not any(params.score_map(m) == "ra" for m in params.models):
        return False
    for key in ("lpips_weights", "lpips_backbone_weights"):
        value = getattr(score, key)
        if value and not Path(value).expanduser().is_file():
            raise ConfigError(f"params.yaml: score.{key}: {value!r} is not a file")
    return True


def _device(params: Params) -> bool:
    from imgae_dx.device import resolve_device

    try:
        resolve_device(params.train.device)
    except ValueError as e:
        raise ConfigError(f"params.yaml: {e}") from None
    return params.train.device != "auto"
