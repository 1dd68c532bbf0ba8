"""Render one synthetic chest radiograph (PA or AP) from an image spec.

The image is built as a map of attenuation ``A`` (projected tissue thickness; the body's full
soft-tissue thickness ~ 1) and then passed through a display curve, as a detector and its
processing would: air outside the body is black, aerated lungs dark, mediastinum, heart,
abdomen and bone white. Anatomy: body outline with neck, shoulders and arms; two lungs (apices,
costophrenic angles, diaphragm domes) with a branching vascular tree from the hila; heart and
mediastinum (aortic knob, trachea and main bronchi); spine; posterior and anterior ribs;
clavicles, scapulae and humeral heads; breast shadows; gastric bubble; support devices (ECG
leads, lines, tubes) and burnt-in markers.

AP differs from PA as on real films: magnified heart, clavicles projected higher and flatter,
scapulae over the lungs, poorer inspiration, more rotation, lower contrast, more noise, more
devices, supine appearance of fluid and air. Nuisance (exposure, window, gamma, field of view,
rotation, noise, blur, collimation, markers) is drawn per image so that global intensity says
nothing about the label.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw
from scipy.ndimage import gaussian_filter

from imgae_dx.data.sources._phantom_findings import AIR, Ctx, modify_geometry, render_lesions
from imgae_dx.data.sources._phantom_geometry import (
    Frame,
    Geo,
    diaphragm,
    heart_r2,
    lung_borders,
    lung_f,
    smooth_noise,
)

# ---- acquisition ---------------------------------------------------------------------------


def sample_acquisition(rng: np.random.Generator, view: str) -> dict:
    """Per-image nuisance: geometry, inspiration, exposure, noise, devices, markers."""
    ap = view == "AP"
    return {
        "ap": ap,
        "supine": bool(ap and rng.random() < 0.6),
        "zoom": float(rng.normal(0.97 if ap else 1.0, 0.06 if ap else 0.045)),
        "theta": float(np.deg2rad(rng.normal(0.0, 3.5 if ap else 1.8))),
        "tx": float(rng.normal(0.0, 0.035)),
        "ty": float(rng.normal(0.05 if ap else 0.03, 0.05)),
        "twist": float(rng.normal(0.0, 0.025 if ap else 0.012)),
        "insp": float(rng.normal(0.09, 0.04) if ap else rng.normal(0.0, 0.03)),
        "mag": float(rng.normal(1.14, 0.035)) if ap else 1.0,
        "a0": float(rng.normal(0.0 if ap else -0.04, 0.035)),
        "a1": float(rng.normal(1.4 if ap else 1.3, 0.06)),
        "gamma": float(np.exp(rng.normal(0.05 if ap else -0.05, 0.08))),
        "shift": float(rng.normal(0.0, 0.04)),
        "noise": float(rng.uniform(0.01, 0.028) if ap else rng.uniform(0.005, 0.018)),
        "blur": float(rng.uniform(0.5, 1.1)),
        "arms": bool(rng.random() < (0.25 if ap else 0.06)),
        "devices": bool(rng.random() < (0.4 if ap else 0.05)),
        "collimate": bool(rng.random() < 0.03),
        "tissue": float(rng.normal(1.0, 0.04)),
    }


def build_geo(an: dict, acq: dict) -> Geo:
    insp = acq["insp"]
    cp = {-1: an["cp_v"] - insp, 1: an["cp_v"] - insp + 0.02}
    dome = {s: cp[s] - an["dome_rise"] * (1.0 + 0.8 * insp) for s in (-1, 1)}
    dome[-1] += an["right_dome"]
    w = an["W"] * (1.0 - 0.15 * insp)
    ha = an["ctr"] * w * (1.0 + 0.6 * insp) * acq["mag"] * 1.02
    return Geo(
        W={-1: w, 1: w * 1.01},
        apex_v=an["apex_v"] + 0.4 * insp,
        apex_x=0.32 * w,
        cp_v=cp,
        dome_v=dome,
        med_w=an["med_w"] * acq["mag"] ** 0.5,
        knob=an["knob"],
        knob_v=an["apex_v"] + 0.38,
        hx=an["heart_x"] + acq["twist"],
        hy=dome[1] - 0.1 - 0.05 * insp,
        ha=ha,
        hb=ha * an["heart_ratio"],
        tilt=an["heart_tilt"] * (1.0 - 1.5 * insp),
        W_body=w + an["margin"],
        neck_w=0.17 + 0.2 * an["margin"],
        shoulder_v=an["apex_v"] - 0.17 - (0.04 if acq["ap"] else 0.0),
        spine_x=acq["twist"] * 1.6,
        hilum_v=an["apex_v"] + 0.52 * (cp[1] - an["apex_v"]),
    )


# ---- drawing helpers -----------------------------------------------------------------------


class Layer:
    """An 8-bit PIL canvas drawn at ``ss``x and read back as float32 in [0, 1]."""

    def __init__(self, fr: Frame):
        self.fr = fr
        n = fr.size * fr.ss
        self.im = Image.new("L", (n, n), 0)
        self.draw = ImageDraw.Draw(self.im)

    def band(self, pts: np.ndarray, hw, fill: int, outline: int | None = None) -> None:
        """Polygon around a polyline ``pts`` (N, 2) with half-widths ``hw`` (patient units)."""
        hw = np.broadcast_to(np.asarray(hw, dtype=np.float64), (len(pts),))
        poly = _bands(pts[None], hw[None])[0]
        self.draw.polygon(self.fr.to_pil(poly), fill=fill, outline=outline)

    def ellipse(self, u0, v0, ru, rv, fill: int, outline: int | None = None, ang=0.0, n=24):
        t = np.linspace(0, 2 * math.pi, n, endpoint=False)
        c, s = math.cos(ang), math.sin(ang)
        x, y = ru * np.cos(t), rv * np.sin(t)
        pts = np.stack([u0 + c * x - s * y, v0 + s * x + c * y], 1)
        self.draw.polygon(self.fr.to_pil(pts), fill=fill, outline=outline)

    def line(self, pts: np.ndarray, width_units: float, fill: int) -> None:
        w = max(1, int(round(width_units * self.fr.px_per_unit * self.fr.ss)))
        self.draw.line(self.fr.to_pil(pts), fill=fill, width=w)

    def array(self) -> np.ndarray:
        im = self.im.reduce(self.fr.ss) if self.fr.ss > 1 else self.im
        return np.asarray(im, dtype=np.float32) * (1.0 / 255.0)


# ---- anatomy -------------------------------------------------------------------------------


def body_thickness(geo: Geo, acq: dict, u, v) -> np.ndarray:
    """Projected soft-tissue thickness of trunk, neck, shoulders and (optionally) arms."""
    au = np.abs(u)
    axilla = geo.apex_v + 0.3
    # Neck flaring into the trapezius, shoulders rounding down into the arms.
    flare = np.clip((v - geo.shoulder_v + 0.18) / 0.18, 0.0, 1.0) ** 2
    neck = 1.0 / (1.0 + np.exp((au - geo.neck_w - 0.22 * flare) / 0.03))
    q = np.clip((au - geo.neck_w) / (1.05 - geo.neck_w), 0.0, None)
    top = geo.shoulder_v + 0.26 * q**2.5 - 1.5 * neck
    half = geo.W_body * (1.0 - 0.05 * ((v - 0.3) / 1.2) ** 2) + 0.25 / (
        1.0 + np.exp((v - axilla) / 0.05)
    )
    inside = np.clip((half - au) / 0.02, 0.0, 1.0) * np.clip((v - top) / 0.03, 0.0, 1.0)
    prof = 0.5 + 0.5 * np.sqrt(np.clip(1.0 - (u / (geo.W_body + 0.02)) ** 2, 0.0, 1.0))
    t = inside * prof
    if acq["arms"]:
        c = geo.W_body + 0.13
        arm = np.sqrt(np.clip(1.0 - ((au - c) / 0.08) ** 2, 0.0, 1.0))
        t = np.maximum(t, 0.3 * arm * np.clip((v - axilla) / 0.05, 0.0, 1.0))
    return t


def _bands(pts: np.ndarray, hw: np.ndarray) -> np.ndarray:
    """Polygons around R polylines ``pts`` (R, N, 2) with half-widths ``hw`` (R, 1): (R, 2N, 2)."""
    d = np.empty_like(pts)
    d[:, 1:-1] = pts[:, 2:] - pts[:, :-2]
    d[:, 0], d[:, -1] = pts[:, 1] - pts[:, 0], pts[:, -1] - pts[:, -2]
    n = np.stack([-d[..., 1], d[..., 0]], -1)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    off = n * hw[..., None]
    return np.concatenate([pts + off, (pts - off)[:, ::-1]], 1)


def _ribs(geo: Geo, an: dict, post: Layer, ant: Layer) -> None:
    """Posterior ribs (arching laterally and down) and fainter anterior ribs (down and medial)."""
    n = 11
    k = np.arange(n, dtype=np.float64)
    dv = an["rib_dv"] * (geo.cp_v[1] - geo.apex_v) / 1.18
    v0 = geo.apex_v - 0.06 + k * dv
    t = np.linspace(0.0, 1.0, 12)[None, :]
    ta = np.linspace(0.0, 1.0, 9)[None, :]
    drop = np.where(k > 0, 0.17 + 0.012 * k + an["rib_slope"], 0.09)[:, None]
    hw = (0.017 + 0.0014 * k)[:, None]
    xa_end = np.where(k > 0, 0.2 + 0.015 * k, 0.1)[:, None]
    for side in (-1, 1):
        _, x_lat = lung_borders(geo, side, np.minimum(v0 + 0.05, geo.cp_v[side]))
        x_end = np.maximum(np.where(k > 0, x_lat + 0.03, x_lat * 0.6 + 0.06), 0.2)[:, None]
        x = 0.06 + (x_end - 0.06) * t
        vv = v0[:, None] - 0.05 * np.sin(np.pi * t * 0.75) + drop * t**2.4
        xa = x_end - 0.015 - (x_end - 0.015 - xa_end) * ta
        vva = vv[:, -1:] + 0.05 + (0.2 + 0.012 * k[:, None]) * ta**1.2 - 0.035 * np.sin(np.pi * ta)
        for lay, px, pv, w, fill, outline in (
            (post, x, vv, hw, 150, 255),
            (ant, xa, vva, hw * 1.2, 130, 200),
        ):
            polys = _bands(np.stack([side * px, pv], -1), w)
            flat = lay.fr.to_pil(polys.reshape(-1, 2))
            m = polys.shape[1]
            for r in range(n):
                lay.draw.polygon(flat[r * m : (r + 1) * m], fill=fill, outline=outline)


def _shoulder_girdle(geo: Geo, acq: dict, lay: Layer) -> None:
    ap = acq["ap"]
    clav_v = geo.apex_v + (0.0 if ap else 0.1)
    rise = 0.03 if ap else 0.09
    for side in (-1, 1):
        t = np.linspace(0.0, 1.0, 14)
        x = 0.05 + (geo.W_body - 0.05) * t
        v = clav_v - rise * t + 0.022 * np.sin(2 * np.pi * t)
        hw = 0.022 - 0.006 * np.sin(np.pi * t) + 0.004 * t
        lay.band(np.stack([side * x, v], 1), hw, fill=170, outline=255)
        # Scapula: off the lungs on PA (shoulders rotated forward), over them on AP.
        xs = 0.5 * geo.W[side] if ap else geo.W[side] - 0.03
        top, bottom = clav_v - 0.02, clav_v + 0.5
        pts = np.array(
            [
                [xs, top + 0.04],
                [xs + 0.06, bottom],
                [geo.W_body + 0.02, top + 0.16],
                [geo.W_body + 0.06, top],
            ]
        )
        pts[:, 0] *= side
        lay.draw.polygon(lay.fr.to_pil(pts), fill=45, outline=140)
        # Humeral head in the glenoid.
        lay.ellipse(side * (geo.W_body + 0.12), clav_v - 0.01, 0.09, 0.095, fill=120, outline=220)


def _spine(geo: Geo, an: dict, lay: Layer) -> None:
    v = -1.25
    polys = []
    while v < 1.2:
        h = 0.06 + 0.014 * np.clip((v + 0.6) / 1.2, 0, 1)
        w = 0.05 + 0.02 * np.clip((v + 0.8) / 1.6, 0, 1)
        x = geo.spine_x + an["scoliosis"] * math.sin(2.0 * v)
        polys.append(((x - w, v), (x + w, v), (x + w, v + h), (x - w, v + h)))
        for s in (-1, 1):  # pedicles
            px = x + s * 0.75 * w
            polys.append(
                (
                    (px - 0.012, v + 0.01),
                    (px + 0.012, v + 0.01),
                    (px + 0.012, v + 0.045),
                    (px - 0.012, v + 0.045),
                )
            )
        v += h + 0.018
    pts = lay.fr.to_pil(np.array(polys, dtype=np.float64).reshape(-1, 2))
    for i, _ in enumerate(polys):
        quad = pts[4 * i : 4 * i + 4]
        if i % 3 == 0:
            lay.draw.polygon(quad, fill=110, outline=170)
        else:
            lay.draw.polygon(quad, fill=150, outline=220)


def _vessels(geo: Geo, an: dict, lay: Layer) -> None:
    """Branching pulmonary vascular tree from each hilum (fixed per patient, scaled per image)."""
    rng = np.random.default_rng(an["vessel_seed"])
    s_v = (geo.cp_v[1] - geo.apex_v) / 1.18
    ppu = lay.fr.px_per_unit * lay.fr.ss
    trunks = np.array(
        [
            [-100, 0.17],
            [-70, 0.2],
            [-35, 0.18],
            [0, 0.18],
            [35, 0.2],
            [65, 0.24],
            [95, 0.24],
            [120, 0.18],
        ]
    )
    segs = []
    for side in (-1, 1):
        n = len(trunks)
        x = np.full(n, side * 0.15)
        y = np.full(n, geo.hilum_v)
        a = np.deg2rad(trunks[:, 0] + rng.normal(0, 8, n))
        length = trunks[:, 1] * rng.uniform(0.85, 1.15, n) * 0.8
        w = np.full(n, 0.011)
        for gen in range(6):
            x1 = x + side * np.cos(a) * length
            y1 = y + np.sin(a) * length * s_v
            segs.append((x, y, x1, y1, w, gen))
            if gen == 5:
                break
            k = len(x1)
            da = np.deg2rad(rng.uniform(15, 35, (2, k))) * np.array([[-1], [1]])
            a = np.concatenate([a + da[0], a + da[1]])
            x, y = np.tile(x1, 2), np.tile(y1, 2)
            length = np.tile(length, 2) * rng.uniform(0.6, 0.8, 2 * k)
            w = np.tile(w, 2) * 0.72
            keep = rng.random(2 * k) < (0.97 - 0.06 * gen)
            x, y, a, length, w = x[keep], y[keep], a[keep], length[keep], w[keep]
    for x0, y0, x1, y1, w, gen in segs:
        p0x, p0y = lay.fr.to_px(x0, y0)
        p1x, p1y = lay.fr.to_px(x1, y1)
        ss = lay.fr.ss
        wp = 2 * w * ppu
        width = np.maximum(1, np.round(wp)).astype(int)
        val = (255 * np.minimum(1.0, wp / width) * (1.0 - 0.08 * gen)).astype(int)
        for i in range(len(x0)):
            lay.draw.line(
                [(p0x[i] * ss - 0.5, p0y[i] * ss - 0.5), (p1x[i] * ss - 0.5, p1y[i] * ss - 0.5)],
                fill=int(val[i]),
                width=int(width[i]),
            )


def _air_spaces(geo: Geo, acq: dict, lay: Layer, rng: np.random.Generator) -> None:
    """Trachea, main bronchi and the gastric bubble (subtracted from A)."""
    carina = geo.hilum_v - 0.1
    x = geo.spine_x * 0.5
    lay.line(np.array([[x - 0.01, -1.3], [x - 0.012, geo.knob_v], [x, carina]]), 0.05, 200)
    lay.line(np.array([[x, carina], [-0.13, geo.hilum_v - 0.03]]), 0.03, 170)
    lay.line(np.array([[x, carina], [0.16, geo.hilum_v + 0.02]]), 0.026, 170)
    # Gastric bubble under the left dome: a fluid level when erect.
    cx, cy = 0.3 * geo.W[1] + rng.normal(0, 0.03), geo.dome_v[1] + 0.08
    ru, rv = 0.09 * rng.uniform(0.5, 1.3), 0.05 * rng.uniform(0.6, 1.2)
    t = np.linspace(math.pi, 2 * math.pi, 14)
    pts = np.stack([cx + ru * np.cos(t), cy + rv * np.sin(t)], 1)
    if acq["supine"]:
        lay.ellipse(cx, cy + 0.02, ru * 1.2, rv * 1.3, fill=110)
    else:
        lay.draw.polygon(lay.fr.to_pil(pts), fill=230)


def _devices(geo: Geo, lay: Layer, rng: np.random.Generator) -> None:
    for _ in range(int(rng.integers(2, 5))):
        side = rng.choice([-1, 1])
        u0, v0 = side * rng.uniform(0.2, geo.W_body), rng.uniform(geo.apex_v, geo.cp_v[1])
        lay.ellipse(u0, v0, 0.022, 0.022, fill=60, outline=255, n=16)
        lay.ellipse(u0, v0, 0.006, 0.006, fill=255, n=8)
        t = np.linspace(0, 1, 8)[:, None]
        end = np.array([side * rng.uniform(0.8, 1.3), rng.uniform(-1.2, 1.2)])
        mid = np.array([u0, v0]) + rng.normal(0, 0.2, 2)
        pts = (1 - t) ** 2 * np.array([u0, v0]) + 2 * (1 - t) * t * mid + t**2 * end
        lay.line(pts, 0.006, 200)
    if rng.random() < 0.5:  # central venous catheter into the SVC
        side = rng.choice([-1, 1])
        pts = np.array(
            [
                [side * 0.45, geo.apex_v + 0.05],
                [side * 0.2, geo.apex_v + 0.12],
                [-0.06, geo.apex_v + 0.3],
                [-0.05, geo.hilum_v - 0.05],
            ]
        )
        lay.line(pts, 0.008, 235)
    if rng.random() < 0.3:  # endotracheal tube
        x = geo.spine_x * 0.5
        for dx in (-0.014, 0.014):
            lay.line(np.array([[x + dx, -1.3], [x + dx, geo.knob_v - 0.02]]), 0.006, 230)


# Burnt-in markers: a tiny 5x7 bitmap font, so that no font file is needed.
_FONT = {
    "A": ["01110", "10001", "10001", "11111", "10001", "10001", "10001"],
    "B": ["11110", "10001", "10001", "11110", "10001", "10001", "11110"],
    "E": ["11111", "10000", "10000", "11110", "10000", "10000", "11111"],
    "I": ["01110", "00100", "00100", "00100", "00100", "00100", "01110"],
    "L": ["10000", "10000", "10000", "10000", "10000", "10000", "11111"],
    "N": ["10001", "11001", "10101", "10011", "10001", "10001", "10001"],
    "O": ["01110", "10001", "10001", "10001", "10001", "10001", "01110"],
    "P": ["11110", "10001", "10001", "11110", "10000", "10000", "10000"],
    "R": ["11110", "10001", "10001", "11110", "10100", "10010", "10001"],
    "S": ["01111", "10000", "10000", "01110", "00001", "00001", "11110"],
    "T": ["11111", "00100", "00100", "00100", "00100", "00100", "00100"],
    "U": ["10001", "10001", "10001", "10001", "10001", "10001", "01110"],
    "C": ["01110", "10001", "10000", "10000", "10000", "10001", "01110"],
    " ": ["00000"] * 7,
}
_GLYPHS = {k: np.array([[c == "1" for c in row] for row in v]) for k, v in _FONT.items()}


def _stamp(img: np.ndarray, text: str, r: int, c: int, scale: int, value: float) -> None:
    """Burn ``text`` into ``img`` with its top-left corner at (r, c); clipped at the borders."""
    rows, cols = img.shape
    for ch in text:
        g = np.kron(_GLYPHS[ch], np.ones((scale, scale), dtype=bool))
        h, w = g.shape
        r0, r1, c0, c1 = max(r, 0), min(r + h, rows), max(c, 0), min(c + w, cols)
        if r1 > r0 and c1 > c0:
            img[r0:r1, c0:c1][g[r0 - r : r1 - r, c0 - c : c1 - c]] = value
        c += w + scale


def _markers(img: np.ndarray, acq: dict, rng: np.random.Generator) -> None:
    s = img.shape[0]
    scale = max(1, int(round(s / 110)))
    if rng.random() < 0.8:  # side marker
        letter = "R" if rng.random() < 0.5 else "L"
        r = int(rng.uniform(0.03, 0.12) * s)
        c = int((rng.uniform(0.03, 0.15) if letter == "R" else rng.uniform(0.8, 0.93)) * s)
        pad = scale
        img[max(r - pad, 0) : r + 7 * scale + pad, max(c - pad, 0) : c + 5 * scale + pad] *= 0.3
        _stamp(img, letter, r, c, scale, 1.0)
    words = ("PORTABLE", "AP", "SUPINE", "AP ERECT") if acq["ap"] else ("PA", "ERECT")
    if rng.random() < (0.6 if acq["ap"] else 0.15):
        word = words[int(rng.integers(len(words)))]
        r = (
            int(rng.uniform(0.02, 0.08) * s)
            if rng.random() < 0.5
            else int(rng.uniform(0.88, 0.94) * s)
        )
        c = int(rng.uniform(0.05, 0.55) * s)
        _stamp(img, word, r, c, scale, float(rng.uniform(0.85, 1.0)))


def _collimate(img: np.ndarray, rng: np.random.Generator) -> None:
    s = img.shape[0]
    value = float(rng.uniform(0.75, 1.0)) if rng.random() < 0.7 else 0.0
    for edge in range(4):
        if rng.random() < 0.5:
            continue
        w = int(rng.uniform(0.01, 0.035) * s)
        if w == 0:
            continue
        if edge == 0:
            img[:w] = value
        elif edge == 1:
            img[-w:] = value
        elif edge == 2:
            img[:, :w] = value
        else:
            img[:, -w:] = value


# ---- the image -----------------------------------------------------------------------------


def _upsample(a: np.ndarray, size: int) -> np.ndarray:
    if a.shape[0] == size:
        return a
    im = Image.fromarray(np.ascontiguousarray(a, dtype=np.float32))
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def render(
    spec: dict, size: int
) -> tuple[np.ndarray, list[tuple[str, tuple[float, float, float, float]]]]:
    """Render ``spec`` at ``size``² -> (uint8 (size, size), [(label, (x, y, w, h)), ...]).

    Smooth fields (body, lungs, heart, soft tissue, lesions) are computed at half resolution
    from 128² up and upsampled; line structures (ribs, vessels, devices) are drawn at full
    resolution. Boxes are in pixels of the returned image.
    """
    rng = np.random.default_rng(spec["seed"])
    an = spec["anatomy"]
    acq = sample_acquisition(rng, spec["view"])
    geo = build_geo(an, acq)
    modify_geometry(geo, spec["lesions"])
    lo = size // 2 if size >= 128 else size
    frame = (acq["zoom"], acq["theta"], acq["tx"], acq["ty"])
    fr = Frame(size, *frame, ss=2 if size < 256 else 1)
    fl = Frame(lo, *frame, ss=1)
    u, v = fl.grid()

    T, H, F, air = _thorax(geo, an, acq, u, v)
    ctx = Ctx(fl, geo, u, v, F, air, H, rng, acq["supine"])
    boxes = render_lesions(ctx, spec["lesions"])
    k = size / lo
    boxes = [(lab, (x * k, y * k, w * k, h * k)) for lab, (x, y, w, h) in boxes]

    smooth = T * acq["tissue"] - AIR * (air[-1] + air[1]) + ctx.dA
    _soft_tissue(smooth, geo, an, fl, u, v)
    A = _attenuation(smooth, ctx, geo, an, acq, fr, T, size, rng)
    return _display(A, acq, size, rng), boxes


def _thorax(geo: Geo, an: dict, acq: dict, u, v) -> tuple:
    """Body thickness T, heart profile H, and per lung its field F and air column (low res)."""
    T = body_thickness(geo, acq, u, v)
    # Below the diaphragm the abdomen is a little thicker than the chest.
    T += 0.06 * np.clip((v - geo.dome_v[1]) / 0.15, 0.0, 1.0) * (T > 0.3)
    H = np.clip(1.0 - heart_r2(geo, u, v), 0.0, 1.0) ** 0.25
    tissue_rng = np.random.default_rng(an["tissue_seed"])
    texture = 1.0 + 0.07 * smooth_noise(tissue_rng, u.shape, 12)
    depth = 0.6 + 0.4 * np.sqrt(np.clip(1.0 - (u / (geo.W_body + 0.02)) ** 2, 0.0, 1.0))
    # Less air at the apices and over the bases (soft tissue, posterior recesses).
    zone = (0.75 + 0.25 * np.clip((v - geo.apex_v) / 0.35, 0.0, 1.0)) * (
        1.0 - 0.22 * np.clip((v - geo.dome_v[1] + 0.3) / 0.3, 0.0, 1.0)
    )
    common = (1.0 - 0.9 * H) * depth * zone * texture
    F, air = {}, {}
    for side in (-1, 1):
        F[side] = lung_f(geo, side, u, v)
        air[side] = np.sqrt(np.clip(F[side] * 10.0, 0.0, 1.0)) * common * geo.air[side]
    return T, H, F, air


def _soft_tissue(smooth: np.ndarray, geo: Geo, an: dict, fl: Frame, u, v) -> None:
    """Add the hilar vessels and, where the anatomy has them, the breast shadows (in place)."""
    for side in (-1, 1):  # hilar vessels
        smooth += 0.08 * np.exp(-((u - side * 0.15) ** 2 + (v - geo.hilum_v) ** 2) / 0.004)
    if an["breast"] <= 0:
        return
    b = an["breast"]
    for side in (-1, 1):
        x0 = 0.5 * geo.W[side]
        cu, cv = side * (x0 + 0.1), diaphragm(geo, side, x0) - 0.08
        win = fl.window(cu, cv, 0.4 * b + 0.06)
        uu, vv = fl.grid(win)
        r2 = ((uu - cu) / (0.33 * b + 0.06)) ** 2 + ((vv - cv) / (0.22 * b + 0.05)) ** 2
        smooth[win[0] : win[1], win[2] : win[3]] += 0.13 * b * np.clip(1.0 - r2, 0.0, 1.0) ** 0.35


def _attenuation(
    smooth: np.ndarray, ctx: Ctx, geo: Geo, an: dict, acq: dict, fr: Frame, T, size: int, rng
) -> np.ndarray:
    """The full-resolution attenuation: the smooth field plus vessels, bones, air spaces and
    devices, drawn as line structures."""
    v, F, H = ctx.v, ctx.F, ctx.H
    lungs = np.clip((F[-1] + 0.004) * 60.0, 0, 1) + np.clip((F[1] + 0.004) * 60.0, 0, 1)
    vmult = lungs * (1.0 - 0.6 * H)
    if ctx.vgate is not None:
        vmult *= ctx.vgate
    if ctx.vgain is not None:
        vmult *= ctx.vgain
    below = 1.0 - 0.7 * np.clip((v - geo.dome_v[1] - 0.05) / 0.2, 0.0, 1.0)
    body = np.clip((T - 0.2) * 20.0, 0.0, 1.0)

    vess, post, ant, girdle, spine, airl = (Layer(fr) for _ in range(6))
    _vessels(geo, an, vess)
    _ribs(geo, an, post, ant)
    _shoulder_girdle(geo, acq, girdle)
    _spine(geo, an, spine)
    _air_spaces(geo, acq, airl, rng)
    bone = an["bone"]
    vessels = gaussian_filter(vess.array(), 0.6 * size / 256.0, truncate=2.0)
    A = (
        _upsample(smooth, size)
        + 0.12 * vessels * _upsample(vmult, size)
        + bone * (0.13 * post.array() + 0.08 * ant.array()) * _upsample(below, size)
        + bone * (0.2 * girdle.array() + 0.1 * spine.array())
        - 0.17 * airl.array() * _upsample(body, size)
    )
    if acq["devices"]:
        dev = Layer(fr)
        _devices(geo, dev, rng)
        A += 0.55 * dev.array()
    return A


def _display(A: np.ndarray, acq: dict, size: int, rng) -> np.ndarray:
    """Attenuation to an 8-bit film: window, gamma, detector blur, noise, collimation, markers."""
    y = np.clip((A - acq["a0"]) / (acq["a1"] - acq["a0"]), 0.0, 1.0) ** acq["gamma"] + acq["shift"]
    y = gaussian_filter(y, acq["blur"] * size / 256.0, truncate=2.5)
    y += rng.standard_normal(y.shape, dtype=np.float32) * (acq["noise"] * np.sqrt(0.3 + y))
    if acq["collimate"]:
        _collimate(y, rng)
    _markers(y, acq, rng)
    return np.clip(y * 255.0 + 0.5, 0, 255).astype(np.uint8)
