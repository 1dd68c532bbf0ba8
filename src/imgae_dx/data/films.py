"""Read a new film (PNG, JPEG or DICOM) for ``imgae-dx predict``: decode, check, preprocess.

A film that cannot be scored raises :class:`FilmError`, whose message is the one line that
``predictions.csv`` puts in its ``error`` column: a corrupt or foreign file, a colour image, a
multi-frame DICOM, a view or a size the detector was not trained on. What a film becomes after
decoding is :func:`imgae_dx.data.prepare.preprocess`, the function ``prepare`` runs on the
training data.

DICOM (``pydicom``) goes through the standard display pipeline (DICOM PS3.4 N.2): the modality
LUT (*Rescale Slope/Intercept* or a *Modality LUT Sequence*), the VOI LUT (a *VOI LUT
Sequence*, else *Window Center/Width*), then MONOCHROME1 inverted so that bone is bright as in
the training PNGs. The result is mapped linearly from the output range of that pipeline (the
window's, or the stored bits' when no VOI is given) to 8 bits. Any bit depth pydicom decodes
(8, 12, 16 bits, signed or not) takes the same road.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from PIL import Image, UnidentifiedImageError

from imgae_dx.data.prepare import Decoded, preprocess
from imgae_dx.errors import one_line

#: File name endings ``predict`` picks up in a folder (plus any file with the DICOM preamble).
FILM_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".dcm", ".dicom"})
#: PIL formats a film may be in (DICOM is read by pydicom).
IMAGE_FORMATS = frozenset({"PNG", "JPEG"})
#: The largest channel difference (8-bit levels) of a grayscale film stored as RGB: JPEG's
#: chroma subsampling leaves a few levels; a colour picture differs by far more.
GRAY_TOLERANCE = 8
_SIGNATURES = {b"\x89PNG\r\n\x1a\n": "PNG", b"\xff\xd8\xff": "JPEG"}


class FilmError(ValueError):
    """A film that cannot be scored; the message is one line saying why and what to do."""


class Film(NamedTuple):
    image: Image.Image  # decoded, 8-bit grayscale or a mode preprocess() converts
    size: tuple[int, int]  # (width, height) of the file's pixels
    view: str | None  # DICOM ViewPosition (PA, AP, LL...); None when the file has none


Source = str | os.PathLike | IO[bytes] | bytes


def is_dicom(head: bytes) -> bool:
    """The DICOM Part 10 preamble: 128 bytes, then ``DICM``."""
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_film(source: Source) -> Film:
    """Decode one film from a path, an open binary file or its bytes."""
    data = _bytes(source)
    if is_dicom(data[:132]):
        return _read_dicom(data)
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except UnidentifiedImageError as e:
        kind = next((k for sig, k in _SIGNATURES.items() if data.startswith(sig)), None)
        if kind:
            raise FilmError(f"cannot decode: a damaged {kind} file (re-export it)") from e
        raise FilmError("not an image: no PNG, JPEG or DICOM signature (wrong file?)") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for a bad file
        raise FilmError(f"cannot decode: {one_line(e)} (not a PNG, JPEG or DICOM film?)") from e
    if im.format not in IMAGE_FORMATS:
        raise FilmError(f"unsupported format {im.format}: convert it to PNG")
    if getattr(im, "n_frames", 1) > 1:
        raise FilmError(f"{im.n_frames} frames in one file: save one film per file")
    _check_gray(im)
    return Film(im, im.size, None)


def _bytes(source: Source) -> bytes:
    if isinstance(source, bytes | bytearray):
        return bytes(source)
    if hasattr(source, "read"):
        return source.read()
    try:
        return Path(source).read_bytes()
    except OSError as e:
        raise FilmError(f"cannot read: {(e.strerror or str(e)).lower()}") from e


def _check_gray(im: Image.Image) -> None:
    """A colour picture is refused; a grayscale film stored as RGB(A)/palette passes."""
    if im.mode in ("RGB", "RGBA", "P", "PA", "CMYK", "YCbCr"):
        rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
        spread = int((rgb.max(axis=2) - rgb.min(axis=2)).max()) if rgb.size else 0
        if spread > GRAY_TOLERANCE:
            raise FilmError(
                f"colour image (mode {im.mode}, channels differ by up to {spread} levels): "
                "a chest film is grayscale; export the film itself, not a screenshot"
            )


def _read_dicom(data: bytes) -> Film:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames > 1:
            raise FilmError(f"multi-frame DICOM ({frames} frames): export one frame per file")
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise FilmError("DICOM without pixel data (a report, a DICOMDIR or a damaged file)")
        photometric = str(ds.get("PhotometricInterpretation", ""))
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise FilmError(
                f"DICOM PhotometricInterpretation {photometric or 'missing'}: only grayscale "
                "(MONOCHROME1/2) films can be scored"
            )
        raw = ds.pixel_array
        lo, hi = _display_range(ds, raw)
        shown = apply_voi_lut(apply_modality_lut(raw, ds), ds).astype(np.float64)
    except FilmError:
        raise
    except Exception as e:  # pydicom: missing pixel data, unknown transfer syntax, ...
        raise FilmError(f"cannot decode DICOM: {one_line(e)}") from e
    unit = np.clip((shown - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    if photometric == "MONOCHROME1":  # low values are bright: invert to MONOCHROME2
        unit = 1.0 - unit
    pixels = np.floor(unit * 255.0 + 0.5).astype(np.uint8)
    view = str(ds.get("ViewPosition", "") or "").strip().upper() or None
    return Film(Image.fromarray(pixels, mode="L"), (pixels.shape[1], pixels.shape[0]), view)


def _display_range(ds, raw: np.ndarray) -> tuple[float, float]:
    """The output range of the modality + VOI LUT stages, as pydicom computes them: a VOI LUT
    Sequence's entries, a window's (the stored bits' range through the rescale), or, without
    any VOI, the range of the film's own rescaled values."""
    voi = ds.get("VOILUTSequence")
    if voi:
        return 0.0, float(2 ** int(voi[0].LUTDescriptor[2]) - 1)
    if "WindowCenter" in ds and "WindowWidth" in ds:
        if ds.get("ModalityLUTSequence"):
            lo, hi = 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
        elif int(ds.PixelRepresentation) == 0:
            lo, hi = 0.0, float(2 ** int(ds.BitsStored) - 1)
        else:
            lo, hi = -float(2 ** (int(ds.BitsStored) - 1)), float(2 ** (int(ds.BitsStored) - 1) - 1)
        slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
        if slope is not None and intercept is not None and not ds.get("ModalityLUTSequence"):
            lo, hi = sorted(
                (lo * float(slope) + float(intercept), hi * float(slope) + float(intercept))
            )
        return lo, hi
    from pydicom.pixels import apply_modality_lut

    values = apply_modality_lut(raw, ds)
    return float(np.min(values)), float(np.max(values))


class FilmCheck(NamedTuple):
    """What a detector accepts (:class:`imgae_dx.detector.Detector` fills it)."""

    image_size: int
    views: tuple[str, ...]  # views it was trained on (e.g. PA, AP)
    side_range: tuple[int, int]  # (smallest, largest) side of its training films, pixels
    size_tolerance: float  # a film side may be this many times outside side_range


def check_film(film: Film, check: FilmCheck) -> None:
    """Refuse a film the detector was not trained for: another view, a far-off size."""
    if film.view is not None and check.views and film.view not in check.views:
        raise FilmError(
            f"view {film.view} (DICOM ViewPosition): the detector was trained on "
            f"{'/'.join(check.views)} films only"
        )
    lo, hi = check.side_range
    w, h = film.size
    if min(w, h) * check.size_tolerance < lo or max(w, h) > hi * check.size_tolerance:
        raise FilmError(
            f"film is {w}x{h} pixels, far from the training films ({lo}-{hi} pixels a side); "
            f"resample it, or raise --size-tolerance (now {check.size_tolerance:g})"
        )


def load_film(source: Source, check: FilmCheck) -> Decoded:
    """Read, check and preprocess one film into the detector's input (uint8, S²)."""
    film = read_film(source)
    check_film(film, check)
    return preprocess(film.image, check.image_size)
