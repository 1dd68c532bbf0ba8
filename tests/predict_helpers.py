"""Detectors and films for the predict/export/MLflow tests, built without the pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.conftest import make_params, phantoms_uint8, tiny_model

SIZE = 32  # the tiny models' input side
FILM = 64  # side of the test films (resized to SIZE by preprocess)


def make_detector(path: Path, arch: str, **score: object) -> Path:
    """A detector file for a tiny, untrained ``arch`` whose threshold and quantiles come from
    40 phantom 'validation normals'."""
    from imgae_dx.detector import build_meta, normal_quantiles, save_detector
    from imgae_dx.inference import score_images, score_method
    from imgae_dx.metrics import threshold_from_normals

    model = tiny_model(arch, SIZE).eval()
    ckpt = {"arch": arch, "model_args": model.model_args, "state_dict": model.state_dict()}
    method = score_method(model, make_params(**{f"score.{k}": v for k, v in score.items()}).score)
    val = score_images(model, phantoms_uint8(40, seed=1, size=SIZE), method).scores
    thr = {"value": threshold_from_normals(val, 95.0), "percentile": 95.0, "n_val_normal": 40}
    training = {
        "source": "synthetic", "shards": ["images_001"], "views": ["AP", "PA"],
        "n_images": 40, "n_patients": 30, "film_sides": [FILM, FILM],
    }  # fmt: skip
    meta = build_meta(ckpt, SIZE, method, thr, normal_quantiles(val), training)
    save_detector(path, ckpt, meta)
    return path


def film_pixels(n: int, seed: int = 7) -> np.ndarray:
    """(n, FILM, FILM) uint8 phantom films."""
    return phantoms_uint8(n, seed=seed, size=FILM)


def write_pngs(folder: Path, n: int, seed: int = 7) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, px in enumerate(film_pixels(n, seed)):
        p = folder / f"film_{i:02d}.png"
        Image.fromarray(px, mode="L").save(p)
        out.append(p)
    return out


def write_dicom(path: Path, pixels: np.ndarray, **attrs: object) -> Path:
    """A DICOM file written with pydicom's own writer: 16-bit MONOCHROME2 by default, the
    pixels stored as ``pixels * 16`` (12 bits used); ``attrs`` override any element."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    ds.Modality, ds.ViewPosition = "DX", "PA"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    stored = pixels.astype(np.uint16) * 16
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = stored.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
