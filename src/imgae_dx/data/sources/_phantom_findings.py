"""The fourteen NIH findings on the chest phantom, each with a range from obvious to subtle.

A lesion (see ``_phantom_people._new_lesion``) carries its label, where it sits in
lung-normalised coordinates, its conspicuity ``s`` in [0, 1] (subtle .. obvious), a growth
factor ``g`` that drifts across follow-ups and a seed that fixes its shape for the patient.

Appearance follows the radiological signs (Felson, *Principles of Chest Roentgenology*):
nodules and masses are spherical opacities (chord profile); effusions fill the costophrenic
recess with a meniscus (erect) or grey the hemithorax (supine); pneumothorax is a peripheral
zone without lung markings bounded by the visceral pleural line; consolidation replaces the
air of a lobe/segment (sharp at a fissure); infiltrates are patchy and ill-defined; atelectasis
is plate-like or lobar with volume loss; edema is perihilar with Kerley B lines and upper-lobe
diversion; emphysema is hyperinflation, hyperlucency, pruned vessels and bullae; fibrosis is a
reticular net; pleural thickening is a peripheral band or apical cap; a hiatal hernia is a
retrocardiac opacity with an air-fluid level.

Work is in attenuation units ``A`` (the body's full soft-tissue thickness ~ 1; lung air
removes up to ~0.72). Most lesions *replace lung air*, so they scale with the local air depth:
they fade at the lung edge and behind the heart, as on real films. Each renderer adds to
``ctx.dA`` and returns its boxes (x, y, w, h) in pixels, measured on what it drew.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from imgae_dx.data.sources._phantom_geometry import (
    Frame,
    Geo,
    heart_extent,
    lung_borders,
    lung_point,
    smooth_noise,
)

AIR = 0.72  # attenuation removed by a full-depth lung (see _phantom.compose)
Box = tuple[float, float, float, float]


class Ctx:
    """What a lesion renderer may read and write for one image."""

    def __init__(self, fr: Frame, geo: Geo, u, v, F, air, H, rng, supine: bool):
        self.fr, self.geo, self.u, self.v = fr, geo, u, v
        self.F, self.air, self.H = F, air, H  # per-side lung fn / air depth; heart (S, S)
        self.rng, self.supine = rng, supine
        self.S = fr.size
        self.dA = np.zeros_like(u)
        self.vgate = None  # multiplicative gate on vessel markings (None = all ones)
        self.vgain = None

    def gate(self, g: np.ndarray) -> None:
        self.vgate = g if self.vgate is None else self.vgate * g

    def gain(self, g: np.ndarray) -> None:
        self.vgain = g if self.vgain is None else self.vgain * g


# ---- helpers -------------------------------------------------------------------------------
def _box_from(arr: np.ndarray, frac: float, r0: int = 0, c0: int = 0) -> Box | None:
    """Bounding box (pixels) of ``|arr| > frac * max|arr|``; None when nothing was drawn."""
    a = np.abs(arr)
    m = float(a.max()) if a.size else 0.0
    if m <= 1e-6:
        return None
    mask = a > frac * m
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return (
        float(c0 + cols[0]),
        float(r0 + rows[0]),
        float(cols[-1] - cols[0] + 1),
        float(rows[-1] - rows[0] + 1),
    )


def _circle_box(fr: Frame, u0: float, v0: float, r: float) -> Box | None:
    px, py = fr.to_px(u0, v0)
    rp = r * fr.px_per_unit
    x0, y0 = max(0.0, float(px) - rp), max(0.0, float(py) - rp)
    x1, y1 = min(float(fr.size), float(px) + rp), min(float(fr.size), float(py) + rp)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1 - x0, y1 - y0


def _sl(win):
    r0, r1, c0, c1 = win
    return slice(r0, r1), slice(c0, c1)


def _sides(les: dict) -> tuple[int, ...]:
    return (-1, 1) if les["side"] == 0 else (int(les["side"]),)


def _ramp(t, lo=0.0, hi=1.0):
    return np.clip((t - lo) / (hi - lo), 0.0, 1.0)


# ---- geometry modifiers (applied before the anatomy is drawn) ------------------------------
def modify_geometry(geo: Geo, lesions: list[dict]) -> None:
    for les in lesions:
        s, g, lab = les["s"], les["g"], les["label"]
        if lab == "Cardiomegaly":
            k = (1.12 + 0.45 * s) * g**0.3
            ha0 = geo.ha
            geo.ha *= k
            geo.hb *= 1.0 + 0.55 * (k - 1.0)
            geo.hx += 0.35 * (k - 1.0) * ha0
            geo.hy += 0.2 * (k - 1.0) * geo.hb
        elif lab == "Emphysema":
            for side in (-1, 1):
                rise = geo.cp_v[side] - geo.dome_v[side]
                geo.cp_v[side] += 0.03 + 0.07 * s
                geo.dome_v[side] = geo.cp_v[side] - rise * (0.75 - 0.4 * s)
                geo.W[side] += 0.02 * s
                geo.air[side] *= 1.04 + 0.16 * s
            geo.ha *= 0.93
        elif lab == "Atelectasis":
            for side in _sides(les):
                geo.dome_v[side] -= (
                    (0.012 + 0.05 * s) if les["kind"] != "plate" else 0.01 + 0.015 * s
                )
        elif lab == "Fibrosis":
            for side in (-1, 1):
                geo.dome_v[side] -= 0.025 * s
                geo.cp_v[side] -= 0.02 * s


# ---- renderers -----------------------------------------------------------------------------
def _sphere(ctx: Ctx, side: int, u0: float, v0: float, r: float, amp: float, lobes=None) -> None:
    """Spherical opacity (chord profile), fainter where it overlaps little lung (heart, hila)."""
    win = ctx.fr.window(u0, v0, r * 1.4)
    uu, vv = ctx.fr.grid(win)
    du, dv = uu - u0, vv - v0
    d2 = du * du + dv * dv
    if lobes is not None:
        th = np.arctan2(dv, du)
        rr = r * (1.0 + sum(a * np.cos(k * th + p) for k, a, p in lobes))
        t = d2 / (rr * rr)
    else:
        t = d2 / (r * r)
    over_lung = 0.35 + 0.65 * np.clip(ctx.air[side][_sl(win)] / 0.6, 0.0, 1.0)
    ctx.dA[_sl(win)] += amp * np.sqrt(np.clip(1.0 - t, 0.0, 1.0)) * over_lung


def nodule(ctx: Ctx, les: dict) -> list[Box]:
    lr = np.random.default_rng(les["seed"])
    boxes = []
    for k in range(les["count"]):
        side, a, b = les["side"], les["a"], les["b"]
        if k:
            side, a, b = int(lr.choice([-1, 1])), lr.uniform(0.15, 0.85), lr.uniform(0.15, 0.9)
        s = les["s"] * (1.0 if k == 0 else lr.uniform(0.5, 1.0))
        r = (0.014 + 0.045 * s) * math.sqrt(les["g"]) * math.exp(lr.normal(0, 0.08))
        dens = lr.uniform(0.85, 1.15)
        if les["kind"] == "calcified":
            r, dens = r * 0.6, 2.2
        u0, v0 = lung_point(ctx.geo, side, a, b)
        _sphere(ctx, side, u0, v0, r, 1.2 * r * dens * (0.7 + 0.5 * s))
        bx = _circle_box(ctx.fr, u0, v0, r * 1.1)
        if bx:
            boxes.append(bx)
    return boxes


def mass(ctx: Ctx, les: dict) -> list[Box]:
    lr = np.random.default_rng(les["seed"])
    s = les["s"]
    r = (0.08 + 0.2 * s) * math.sqrt(les["g"])
    side = les["side"] or 1
    u0, v0 = lung_point(ctx.geo, side, 0.3 + 0.5 * les["a"], min(les["b"], 0.75))
    lobes = [(k, lr.uniform(0.02, 0.1), lr.uniform(0, 2 * math.pi)) for k in (2, 3, 5)]
    amp = min(1.5 * r, 0.4) * lr.uniform(0.85, 1.1) * (0.75 + 0.4 * s)
    _sphere(ctx, side, u0, v0, r, amp, lobes)
    bx = _circle_box(ctx.fr, u0, v0, r * 1.2)
    return [bx] if bx else []


def effusion(ctx: Ctx, les: dict) -> list[Box]:
    geo, u, v = ctx.geo, ctx.u, ctx.v
    boxes = []
    for side in _sides(les):
        h = float(np.clip((0.05 + 0.65 * les["s"] ** 0.8) * les["g"], 0.03, 0.8))
        height = geo.cp_v[side] - geo.apex_v
        x = side * u
        if ctx.supine:
            t = _ramp(v, geo.apex_v, geo.cp_v[side])
            fill = (0.12 + 0.55 * h) * t**1.3
            blunt = _ramp(v, geo.cp_v[side] - 0.5 * h * height, geo.cp_v[side])
            fill = np.maximum(fill, blunt)
        else:
            level_lat = geo.cp_v[side] - h * height
            xr = _ramp(x, 0.1, geo.W[side])
            level = level_lat + (0.05 + 0.18 * h) * (1.0 - xr) ** 1.5
            fill = _ramp(v - level, 0.0, 0.015 + 0.05 * h)
        d = AIR * ctx.air[side] * fill * (0.85 + 0.1 * les["s"])
        ctx.dA += d
        bx = _box_from(d, 0.3)
        if bx:
            boxes.append(bx)
    return boxes


def cardiomegaly(ctx: Ctx, les: dict) -> list[Box]:
    u0, v0, u1, v1 = heart_extent(ctx.geo)
    v1 = min(v1, ctx.geo.dome_v[1] + 0.04)
    pts = np.array([[u0, v0], [u1, v0], [u0, v1], [u1, v1]])
    px, py = ctx.fr.to_px(pts[:, 0], pts[:, 1])
    S = ctx.S
    x0, x1 = float(np.clip(px.min(), 0, S)), float(np.clip(px.max(), 0, S))
    y0, y1 = float(np.clip(py.min(), 0, S)), float(np.clip(py.max(), 0, S))
    return [(x0, y0, x1 - x0, y1 - y0)] if x1 - x0 > 1 and y1 - y0 > 1 else []


def pneumothorax(ctx: Ctx, les: dict) -> list[Box]:
    geo, u, v = ctx.geo, ctx.u, ctx.v
    side = les["side"] if les["side"] else 1
    x = side * u
    delta = (0.03 + 0.3 * les["s"]) * les["g"]
    _, x_lat = lung_borders(geo, side, v)
    wall = np.minimum(x_lat - x, v - geo.apex_v)
    tv = _ramp(v, geo.apex_v, geo.cp_v[side])
    dv = delta * ((0.35 + 0.9 * tv) if ctx.supine else (1.0 - 0.8 * tv))
    inside = _ramp(ctx.F[side], 0.0, 0.006)
    ptx = np.clip((dv - wall) / 0.006, 0.0, 1.0) * inside
    line_w = 1.2 / ctx.fr.px_per_unit
    line = np.exp(-(((wall - dv) / line_w) ** 2)) * inside * (dv > 2 * line_w)
    rest = (1.0 - ptx) * inside
    d = (
        -0.22 * ptx * np.maximum(ctx.air[side], 0.25 * inside)
        + 0.06 * line
        + 0.05 * (delta / 0.25) * rest * ctx.air[side]
    )
    ctx.dA += d
    ctx.gate(1.0 - ptx)
    bx = _box_from(ptx, 0.5)
    return [bx] if bx else []


def _patch(
    ctx: Ctx,
    side: int,
    u0: float,
    v0: float,
    r: float,
    density: float,
    rough: float,
    soft: float,
    lr: np.random.Generator,
    fissure: float | None = None,
):
    win = ctx.fr.window(u0, v0, r * 1.6)
    uu, vv = ctx.fr.grid(win)
    t = ((uu - u0) ** 2 + (vv - v0) ** 2) / (r * r)
    nz = smooth_noise(lr, uu.shape, 6)
    m = np.clip((1.0 - t + rough * nz) / soft, 0.0, 1.0)
    if fissure is not None:
        m = m * np.clip((fissure - vv) / 0.006, 0.0, 1.0)
    d = AIR * ctx.air[side][_sl(win)] * m * density
    ctx.dA[_sl(win)] += d
    return _box_from(d, 0.25, win[0], win[2])


def consolidation(ctx: Ctx, les: dict, density: float | None = None) -> list[Box]:
    lr = np.random.default_rng(les["seed"])
    s, side = les["s"], les["side"] or 1
    r = (0.09 + 0.2 * s) * math.sqrt(les["g"])
    u0, v0 = lung_point(ctx.geo, side, les["a"], les["b"])
    fissure = None
    if side < 0 and les["b"] < 0.45:  # right upper lobe: sharp lower edge at the minor fissure
        fissure = ctx.geo.hilum_v + 0.03
        v0 = min(v0, fissure - 0.3 * r)
    dens = density if density is not None else 0.5 + 0.45 * s
    bx = _patch(ctx, side, u0, v0, r, dens, 0.4, 0.3, lr, fissure)
    return [bx] if bx else []


def infiltration(ctx: Ctx, les: dict, density: float | None = None) -> list[Box]:
    lr = np.random.default_rng(les["seed"])
    s = les["s"]
    boxes = []
    n = 1 + int(lr.random() < 0.5) + int(lr.random() < 0.2)
    for k in range(n):
        side, a, b = les["side"] or 1, les["a"], les["b"]
        if k:
            side, a, b = int(lr.choice([-1, 1])), lr.uniform(0.1, 0.9), lr.uniform(0.3, 0.95)
        r = (0.08 + 0.16 * s) * math.sqrt(les["g"]) * lr.uniform(0.8, 1.2)
        u0, v0 = lung_point(ctx.geo, side, a, b)
        dens = density if density is not None else 0.22 + 0.45 * s
        bx = _patch(ctx, side, u0, v0, r, dens, 0.8, 0.7, lr)
        if bx:
            boxes.append(bx)
    return boxes


def pneumonia(ctx: Ctx, les: dict) -> list[Box]:
    if les["kind"] == "lobar":
        return consolidation(ctx, les, density=0.4 + 0.4 * les["s"])
    return infiltration(ctx, les, density=0.2 + 0.4 * les["s"])


def atelectasis(ctx: Ctx, les: dict) -> list[Box]:
    geo, lr, s = ctx.geo, np.random.default_rng(les["seed"]), les["s"]
    side = les["side"] or 1
    kind = les["kind"]
    if kind == "plate":
        boxes = []
        for k in range(1 + int(lr.random() < 0.4)):
            u0, v0 = lung_point(geo, side, lr.uniform(0.25, 0.8), les["b"] - 0.08 * k)
            length = (0.08 + 0.16 * s) * les["g"]
            thick = 0.005 + 0.01 * s
            ang = lr.normal(0.0, 0.2)
            win = ctx.fr.window(u0, v0, length * 0.6)
            uu, vv = ctx.fr.grid(win)
            c, sn = math.cos(ang), math.sin(ang)
            p = c * (uu - u0) + sn * (vv - v0)
            q = -sn * (uu - u0) + c * (vv - v0)
            band = np.exp(-((q / thick) ** 2)) * np.clip((0.5 * length - np.abs(p)) / 0.02, 0, 1)
            d = (0.09 + 0.14 * s) * band * _ramp(ctx.F[side][_sl(win)], 0.0, 0.01)
            ctx.dA[_sl(win)] += d
            bx = _box_from(d, 0.25, win[0], win[2])
            if bx:
                boxes.append(bx)
        return boxes
    u, v = ctx.u, ctx.v
    x = side * u
    dens = 0.45 + 0.45 * s
    if kind == "rul":
        side = -1
        x = -u
        ang = math.radians(15 + 35 * s)
        v_f = geo.hilum_v - (x - 0.12) * math.tan(ang)
        m = _ramp(v_f - v, 0.0, 0.01) * _ramp(v, geo.apex_v, geo.apex_v + 0.04)
    else:  # lower-lobe collapse: a triangle from the hilum down to the medial diaphragm
        if kind == "lll":
            side, x = 1, u
        else:
            side, x = -1, -u
        width = 0.1 + 0.25 * s
        x_edge = 0.05 + width * _ramp(v, geo.hilum_v, geo.dome_v[side])
        m = _ramp(x_edge - x, 0.0, 0.012) * _ramp(v, geo.hilum_v, geo.hilum_v + 0.05)
    lung_raw = np.clip(ctx.F[side] / 0.1, 0.0, 1.0)
    d = AIR * m * dens * (0.5 * ctx.air[side] + 0.35 * lung_raw * ctx.H)
    ctx.dA += d
    bx = _box_from(d, 0.25)
    return [bx] if bx else []


def edema(ctx: Ctx, les: dict) -> list[Box]:
    geo, u, v, s = ctx.geo, ctx.u, ctx.v, les["s"]
    lr = np.random.default_rng(les["seed"])
    total = np.zeros_like(u)
    for side in (-1, 1):
        x = side * u
        haze = np.exp(
            -(((x - 0.18) / (0.2 + 0.1 * s)) ** 2) - (((v - geo.hilum_v - 0.05) / 0.3) ** 2)
        )
        total += AIR * ctx.air[side] * (0.12 + 0.45 * s) * haze
        # Kerley B lines: short horizontal lines at the lateral costophrenic angles.
        for _ in range(int(3 + 5 * s)):
            v0 = geo.cp_v[side] - lr.uniform(0.03, 0.2)
            _, x_lat = lung_borders(geo, side, v0)
            x0 = float(x_lat) - lr.uniform(0.005, 0.03)
            win = ctx.fr.window(side * (x0 - 0.02), v0, 0.04)
            uu, vv = ctx.fr.grid(win)
            line = np.exp(-(((vv - v0) / 0.0045) ** 2)) * _ramp(
                0.025 - np.abs(side * uu - x0 + 0.02), 0, 0.006
            )
            total[_sl(win)] += (0.03 + 0.05 * s) * line * _ramp(ctx.F[side][_sl(win)], 0, 0.006)
    ctx.dA += total
    ctx.gain(1.0 + (0.3 + 0.6 * s) * _ramp(geo.hilum_v - v, 0.0, 0.3))
    bx = _box_from(total, 0.25)
    return [bx] if bx else []


def emphysema(ctx: Ctx, les: dict) -> list[Box]:
    geo, u, v, s = ctx.geo, ctx.u, ctx.v, les["s"]
    lr = np.random.default_rng(les["seed"])
    dist = np.sqrt((np.abs(u) - 0.18) ** 2 + (v - geo.hilum_v) ** 2)
    ctx.gate(1.0 - (0.3 + 0.55 * s) * _ramp(dist, 0.15, 0.45))
    d = np.zeros_like(u)
    for _ in range(int(lr.integers(0, 3) + (s > 0.5))):
        side = int(lr.choice([-1, 1]))
        u0, v0 = lung_point(geo, side, lr.uniform(0.3, 0.9), lr.uniform(0.05, 0.4))
        r = lr.uniform(0.04, 0.1)
        win = ctx.fr.window(u0, v0, r * 1.3)
        uu, vv = ctx.fr.grid(win)
        rr = np.sqrt((uu - u0) ** 2 + (vv - v0) ** 2) / r
        wall = np.exp(-(((rr - 1.0) * r / 0.004) ** 2))
        d[_sl(win)] += (-0.07 * np.sqrt(np.clip(1 - rr * rr, 0, 1)) + 0.03 * wall) * _ramp(
            ctx.F[side][_sl(win)], 0, 0.01
        )
    ctx.dA += d
    # The box covers the hyperinflated lungs.
    lungs = np.maximum(_ramp(ctx.F[-1], 0, 0.02), _ramp(ctx.F[1], 0, 0.02))
    bx = _box_from(lungs, 0.5)
    return [bx] if bx else []


def fibrosis(ctx: Ctx, les: dict) -> list[Box]:
    geo, s = ctx.geo, les["s"]
    lr = np.random.default_rng(les["seed"])
    boxes = []
    lower = les["kind"] != "upper"
    spacing = lr.uniform(0.028, 0.045)
    k = 2 * math.pi / spacing
    for side in (-1, 1):
        b0 = 0.6 if lower else 0.05
        u0, v0 = lung_point(geo, side, 0.6, b0 + 0.15)
        win = ctx.fr.window(u0, v0, 0.3)
        uu, vv = ctx.fr.grid(win)
        if uu.size == 0:
            continue
        nz = smooth_noise(lr, uu.shape, 6) * 2.5
        net = np.zeros_like(uu)
        for ang in (0.3, 1.35, 2.4):
            ph = k * (math.cos(ang) * uu + math.sin(ang) * vv) + nz
            net += np.clip(1.0 - np.abs(np.sin(ph)) / 0.3, 0.0, 1.0)
        x = side * uu
        _, x_lat = lung_borders(geo, side, vv)
        zone = _ramp(vv, v0 - 0.15, v0 - 0.05) if lower else _ramp(v0 + 0.15 - vv, 0.0, 0.1)
        zone = zone * _ramp(0.3 - (x_lat - x), 0.0, 0.15)
        d = (0.025 + 0.06 * s) * np.minimum(net, 1.3) * zone * _ramp(ctx.F[side][_sl(win)], 0, 0.01)
        ctx.dA[_sl(win)] += d
        bx = _box_from(d, 0.3, win[0], win[2])
        if bx:
            boxes.append(bx)
    return boxes


def pleural_thickening(ctx: Ctx, les: dict) -> list[Box]:
    geo, u, v, s = ctx.geo, ctx.u, ctx.v, les["s"]
    side = les["side"] or 1
    lr = np.random.default_rng(les["seed"])
    x = side * u
    t = 0.01 + 0.04 * s
    inside = _ramp(ctx.F[side], 0.0, 0.003)
    if les["kind"] == "apical":
        m = _ramp(geo.apex_v + t - v, 0.0, 0.006) * _ramp(geo.apex_v + 0.2 - v, 0.0, 0.05)
    else:
        _, x_lat = lung_borders(geo, side, v)
        v1 = geo.apex_v + lr.uniform(0.25, 0.5) * (geo.cp_v[side] - geo.apex_v)
        v2 = v1 + lr.uniform(0.2, 0.4)
        bump = 1.0 + 0.4 * np.sin(v * lr.uniform(15, 30) + lr.uniform(0, 6))
        m = (
            _ramp(t * bump - (x_lat - x), 0.0, 0.006)
            * _ramp(v, v1, v1 + 0.04)
            * _ramp(v2 - v, 0, 0.04)
        )
    d = (0.07 + 0.1 * s) * m * inside
    ctx.dA += d
    bx = _box_from(d, 0.3)
    return [bx] if bx else []


def hernia(ctx: Ctx, les: dict) -> list[Box]:
    geo, s = ctx.geo, les["s"]
    r = 0.05 + 0.07 * s
    u0, v0 = geo.spine_x + 0.04, geo.dome_v[1] - 0.6 * r
    win = ctx.fr.window(u0, v0, r * 1.3)
    uu, vv = ctx.fr.grid(win)
    prof = np.sqrt(np.clip(1.0 - ((uu - u0) ** 2 + (vv - v0) ** 2) / (r * r), 0.0, 1.0))
    level = v0 - 0.1 * r
    gas = np.clip((level - vv) / 0.004, 0.0, 1.0)
    d = prof * ((0.1 + 0.08 * s) * (1.0 - gas) - (0.1 + 0.12 * s) * gas)
    ctx.dA[_sl(win)] += d
    bx = _circle_box(ctx.fr, u0, v0, r)
    return [bx] if bx else []


RENDERERS: dict[str, Callable[[Ctx, dict], list[Box]]] = {
    "Atelectasis": atelectasis,
    "Cardiomegaly": cardiomegaly,
    "Consolidation": consolidation,
    "Edema": edema,
    "Effusion": effusion,
    "Emphysema": emphysema,
    "Fibrosis": fibrosis,
    "Hernia": hernia,
    "Infiltration": infiltration,
    "Mass": mass,
    "Nodule": nodule,
    "Pleural_Thickening": pleural_thickening,
    "Pneumonia": pneumonia,
    "Pneumothorax": pneumothorax,
}


def render_lesions(ctx: Ctx, lesions: list[dict]) -> list[tuple[str, Box]]:
    """Draw every lesion into ``ctx``; returns (label, box) pairs (at least one per label)."""
    out: list[tuple[str, Box]] = []
    for les in lesions:
        boxes = RENDERERS[les["label"]](ctx, les)
        if not boxes:  # drawn outside the field of view: box the lung it belongs to
            side = les["side"] or 1
            bx = _box_from(np.clip(ctx.F[side], 0, None), 0.05)
            boxes = [bx] if bx else [(0.0, 0.0, float(ctx.S), float(ctx.S))]
        out.extend((les["label"], b) for b in boxes)
    return out
