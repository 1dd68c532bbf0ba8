"""A detector as an MLflow pyfunc model: ``mlflow models serve -m models:/imgae-dx-<arch>/latest``.

Input: a DataFrame with one column ``film`` holding each film's file bytes (PNG, JPEG or
DICOM; base64 in a REST request's JSON). Output: one row per film with ``score``,
``percentile_among_normals``, ``flagged`` and ``error``, computed by
:func:`imgae_dx.predict.predict_films`, the function behind ``imgae-dx predict``, so both score
a film identically. The model directory holds the detector file and its model card as
artifacts and this package as code, so it loads where only MLflow and the dependencies are
installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

OUTPUT_COLUMNS = ["score", "percentile_among_normals", "flagged", "error"]
PIP_REQUIREMENTS = [
    "torch>=2.2,<3", "numpy>=1.24", "pandas>=2.0", "scipy>=1.10", "pillow>=10", "pydicom>=3",
    "pydantic>=2.5,<3", "scikit-learn>=1.3", "pyyaml>=6", "tqdm>=4.60", "matplotlib>=3.7",
]  # fmt: skip


class DetectorModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper of a detector (CPU, or the GPU when there is one)."""

    def load_context(self, context: Any) -> None:
        from imgae_dx.predict import open_detector

        self.detector, self.scorer = open_detector(context.artifacts["detector"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
        return score_films(self.detector, self.scorer, model_input)


def score_films(detector: Any, scorer: Any, films: pd.DataFrame) -> pd.DataFrame:
    """:data:`OUTPUT_COLUMNS` for each film's bytes in ``films["film"]``."""
    from imgae_dx.predict import predict_films

    if "film" not in films:
        raise ValueError(f"expected a column 'film' (the file's bytes), got {list(films.columns)}")
    items = [(str(i), _as_bytes(v), None) for i, v in enumerate(films["film"])]
    out = predict_films(detector, scorer, items, total=len(items))
    for col in ("flagged", "error"):  # None, not NaN, where there is none (JSON null)
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out[OUTPUT_COLUMNS].reset_index(drop=True)


def _as_bytes(v: Any) -> bytes:
    if isinstance(v, bytes | bytearray):
        return bytes(v)
    if isinstance(v, str):  # base64 text, as a JSON request carries binary columns
        import base64

        return base64.b64decode(v)
    raise ValueError(f"a film must be bytes, got {type(v).__name__}")


def save_pyfunc(
    out_dir: str | os.PathLike, detector_path: str | os.PathLike, card_path: str | os.PathLike,
    example_film: bytes,
) -> Path:  # fmt: skip
    """Write the MLflow model directory ``out_dir`` (signature and input example from
    ``example_film``)."""
    from mlflow.models import infer_signature

    from imgae_dx.predict import open_detector

    det, scorer = open_detector(detector_path)
    example = pd.DataFrame({"film": [example_film]})
    signature = infer_signature(example, score_films(det, scorer, example))
    mlflow.pyfunc.save_model(
        path=str(out_dir), python_model=DetectorModel(),
        artifacts={"detector": str(detector_path), "model_card": str(card_path)},
        code_paths=[str(Path(__file__).resolve().parent)], signature=signature,
        input_example=example, pip_requirements=PIP_REQUIREMENTS,
    )  # fmt: skip
    return Path(out_dir)


def example_film(side: int) -> bytes:
    """A mid-gray PNG film of ``side``² (a training film size): the model's input example."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.full((side, side), 128, np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()
