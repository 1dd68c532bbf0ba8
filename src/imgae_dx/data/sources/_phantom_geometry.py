"""Geometry of the chest phantom: the patient frame, per-image anatomy and its shape functions.

Conventions. The patient frame has ``u`` horizontal (image left = patient's right, as on a
radiograph) and ``v`` vertical (down), both about [-1, 1] for the nominal field of view (2 units
~ 40 cm). Per-side functions take ``x = side * u`` (lateral positive; ``side`` -1 is the image-left
lung, the patient's right). Acquisition (zoom, rotation, shift) is one affine map
:class:`Frame` between patient frame and pixels, so every structure, lesion and box moves
together.

All functions are numpy-broadcasting: they take scalars (lesion placement) or (S, S) grids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


class Frame:
    """Affine map patient frame -> image, for an S x S image (PIL drawing at ``ss``x)."""

    def __init__(self, size: int, zoom: float, theta: float, tx: float, ty: float, ss: int = 2):
        self.size, self.ss = int(size), int(ss)
        c, s = math.cos(theta), math.sin(theta)
        self.fwd = np.array([[c, -s], [s, c]]) * zoom  # patient -> image normalised
        self.inv = np.array([[c, s], [-s, c]]) / zoom
        self.t = np.array([tx, ty])
        self.px_per_unit = zoom * size / 2.0

    def grid(
        self, window: tuple[int, int, int, int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Patient coordinates (u, v) of the pixel centres, (S, S) float32 (or a row/col window)."""
        r0, r1, c0, c1 = window if window is not None else (0, self.size, 0, self.size)
        x = (np.arange(c0, c1, dtype=np.float32) + 0.5) * (2.0 / self.size) - 1.0 - self.t[0]
        y = (np.arange(r0, r1, dtype=np.float32) + 0.5) * (2.0 / self.size) - 1.0 - self.t[1]
        (a, b), (c, d) = self.inv.astype(np.float32)
        u = a * x[None, :] + b * y[:, None]
        v = c * x[None, :] + d * y[:, None]
        return u, v

    def to_px(self, u, v) -> tuple[np.ndarray, np.ndarray]:
        """Patient -> continuous pixel coordinates (pixel j spans [j, j + 1))."""
        u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
        x = self.fwd[0, 0] * u + self.fwd[0, 1] * v + self.t[0]
        y = self.fwd[1, 0] * u + self.fwd[1, 1] * v + self.t[1]
        return (x + 1.0) * (self.size / 2.0), (y + 1.0) * (self.size / 2.0)

    def to_pil(self, pts: np.ndarray) -> list[tuple[float, float]]:
        """(N, 2) patient points -> PIL coordinates on the ``ss``x supersampled canvas."""
        px, py = self.to_px(pts[:, 0], pts[:, 1])
        return list(zip((px * self.ss - 0.5).tolist(), (py * self.ss - 0.5).tolist()))

    def window(self, u: float, v: float, radius: float, pad: int = 2) -> tuple[int, int, int, int]:
        """Row/col window of the pixels within ``radius`` (patient units) of (u, v), clipped."""
        px, py = self.to_px(u, v)
        r = radius * self.px_per_unit + pad
        s = self.size
        r0, r1 = int(max(0, math.floor(py - r))), int(min(s, math.ceil(py + r)))
        c0, c1 = int(max(0, math.floor(px - r))), int(min(s, math.ceil(px + r)))
        return r0, max(r0, r1), c0, max(c0, c1)


@dataclass
class Geo:
    """Per-image geometry (patient anatomy after acquisition and findings modified it)."""

    W: dict[int, float]  # lung lateral half-width per side
    apex_v: float
    apex_x: float
    cp_v: dict[int, float]  # costophrenic angle height per side
    dome_v: dict[int, float]  # diaphragm dome height per side
    med_w: float
    knob: float
    knob_v: float
    hx: float  # heart centre, semi-axes, tilt
    hy: float
    ha: float
    hb: float
    tilt: float
    W_body: float
    neck_w: float
    shoulder_v: float
    spine_x: float
    hilum_v: float
    air: dict[int, float] = field(default_factory=lambda: {-1: 1.0, 1: 1.0})

    def dome_x(self, side: int) -> float:
        return 0.45 * self.W[side]

    def kd(self, side: int) -> float:
        rel = (self.W[side] - self.dome_x(side)) / self.W[side]
        return (self.cp_v[side] - self.dome_v[side]) / rel**2


def mediastinum(geo: Geo, side: int, v):
    """Half-width of the mediastinum (trachea, SVC, aortic knob, pulmonary trunk) at height v."""
    if side < 0:
        return geo.med_w + 0.02 * np.clip((v + 0.55) / 0.3, 0.0, 1.0)
    return (
        geo.med_w
        + geo.knob * np.exp(-(((v - geo.knob_v) / 0.055) ** 2))
        + 0.035 * np.exp(-(((v - geo.knob_v - 0.13) / 0.05) ** 2))
    )


def lung_borders(geo: Geo, side: int, v):
    """(medial x, lateral x) of the lung at height v (meaningful between apex and base)."""
    t = np.clip((v - geo.apex_v) / (geo.cp_v[side] - geo.apex_v), 0.0, 1.0)
    g = np.sqrt(1.0 - (1.0 - t) ** 2)
    x_lat = geo.apex_x + (geo.W[side] - geo.apex_x) * g
    tm = np.minimum(1.0, t * 2.2)
    x_med = geo.apex_x - (geo.apex_x - mediastinum(geo, side, v)) * np.sqrt(1.0 - (1.0 - tm) ** 2)
    return x_med, x_lat


def diaphragm(geo: Geo, side: int, x):
    """Height of the diaphragm under lateral position x (dome, costophrenic recess laterally)."""
    return geo.dome_v[side] + geo.kd(side) * ((x - geo.dome_x(side)) / geo.W[side]) ** 2


def lung_f(geo: Geo, side: int, u, v):
    """Signed distance-like function of a lung: > 0 inside (patient units, ~distance to border)."""
    x = side * u
    x_med, x_lat = lung_borders(geo, side, v)
    f = np.minimum(x - x_med, x_lat - x)
    f = np.minimum(f, diaphragm(geo, side, x) - v)
    return np.minimum(f, v - geo.apex_v)


def lung_point(geo: Geo, side: int, a: float, b: float) -> tuple[float, float]:
    """Lung-normalised (a: medial 0 .. lateral 1, b: apex 0 .. base 1) -> patient (u, v) inside."""
    for shrink in (1.0, 0.85, 0.7, 0.55, 0.4):
        bottom = geo.dome_v[side] + 0.04
        v = geo.apex_v + (0.1 + 0.85 * b * shrink) * (bottom - geo.apex_v)
        x_med, x_lat = lung_borders(geo, side, v)
        x_med = float(x_med) + 0.02
        x_lat = float(x_lat) - 0.02
        x = x_med + (0.1 + 0.8 * a) * max(x_lat - x_med, 0.0)
        if float(lung_f(geo, side, side * x, v)) > 0.015:
            return side * x, float(v)
    v = geo.apex_v + 0.45 * (geo.dome_v[side] - geo.apex_v)
    x_med, x_lat = lung_borders(geo, side, v)
    return side * float(0.5 * (x_med + x_lat)), float(v)


def heart_r2(geo: Geo, u, v):
    """Squared elliptic radius of the cardiac silhouette (< 1 inside)."""
    du, dv = u - geo.hx, v - geo.hy
    c, s = math.cos(geo.tilt), math.sin(geo.tilt)
    return ((c * du + s * dv) / geo.ha) ** 2 + ((-s * du + c * dv) / geo.hb) ** 2


def heart_extent(geo: Geo) -> tuple[float, float, float, float]:
    """Bounding box (u0, v0, u1, v1) of the heart ellipse."""
    c, s = math.cos(geo.tilt), math.sin(geo.tilt)
    hw = math.sqrt((geo.ha * c) ** 2 + (geo.hb * s) ** 2)
    hh = math.sqrt((geo.ha * s) ** 2 + (geo.hb * c) ** 2)
    return geo.hx - hw, geo.hy - hh, geo.hx + hw, geo.hy + hh


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field in about [-1, 1]: a cells x cells lattice, bilinearly upsampled."""
    from PIL import Image

    h, w = shape
    if h == 0 or w == 0:
        return np.zeros(shape, dtype=np.float32)
    base = rng.standard_normal((cells, cells)).astype(np.float32) * 0.6
    im = Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.float32)
