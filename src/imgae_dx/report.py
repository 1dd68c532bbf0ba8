"""The evaluation report: metrics.json, ROC/PR point files, figures and report.md.

``load_inputs`` reads the pipeline outputs (paths below, relative to the repository root);
``make_report`` computes everything and writes the outputs atomically, returning the metrics
dict. The numbers come from :mod:`imgae_dx.metrics`, :mod:`imgae_dx.stats` and
:mod:`imgae_dx.localization`; no test label ever picks a threshold: the operating threshold is
a percentile of *validation normal* scores.

Inputs: ``reports/scores/<arch>.csv`` (required), ``reports/maps/<arch>.npz``,
``data/prepared/test.npy`` + ``data/split/test.csv``, ``data/prepared/boxes.csv``,
``reports/train/<arch>.csv``, ``data/split/summary.json`` (all optional: a missing one leaves
its table or figure marked "not available").
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from imgae_dx import localization, metrics, plots, stats
from imgae_dx.io import atomic_dir, save_figure, write_json, write_text

SCORES = "reports/scores/{arch}.csv"
MAPS = "reports/maps/{arch}.npz"
TRAIN = "reports/train/{arch}.csv"
TEST_IMAGES = "data/prepared/test.npy"
TRAIN_IMAGES = "data/prepared/train.npy"
VAL_IMAGES = "data/prepared/val.npy"
TEST_MANIFEST = "data/split/test.csv"
BOXES = "data/prepared/boxes.csv"
SUMMARY = "data/split/summary.json"

VIEW_ORDER = ("PA", "AP")
UNITS = ("patient", "image")
SEX_ORDER = ("M", "F")
NO_FINDING = "No Finding"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ReportConfig:
    """The ``report`` block of params.yaml."""

    bootstrap: int = 1000  # stratified bootstrap resamples for every CI
    seed: int = 0  # bootstrap seed (per stratum, a fixed derivation of it)
    ci: float = 0.95  # CI level
    threshold_percentile: float = 95.0  # operating threshold: this percentile of val normals
    age_bands: tuple[int, ...] = (0, 30, 45, 60, 75, 200)  # [lo, hi) edges
    min_stratum: int = 10  # fewer normals or abnormals in a stratum -> its AUROC is null
    gallery_n: int = 2  # gallery images per architecture and category
    target_specificity: float = 0.95  # for sens_at_<95>spec
    target_sensitivity: float = 0.95  # for spec_at_<95>sens
    max_pixels: int = 500_000  # pixel-AUROC subsample cap (deterministic)
    # independent unit of every interval and test: patient (cluster bootstrap and clustered
    # DeLong; films of one patient correlate) | image (films treated as independent)
    unit: str = "patient"

    @classmethod
    def from_params(cls, block: Mapping[str, Any] | None) -> ReportConfig:
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        for key in block:
            if key not in known:
                raise ValueError(f"report.{key}: unknown key; known keys: {sorted(known)}")
        kw: dict[str, Any] = {}
        for key, val in block.items():
            try:
                if key == "age_bands":
                    kw[key] = tuple(int(v) for v in val)
                elif key == "unit":
                    if val not in UNITS:
                        raise ValueError
                    kw[key] = str(val)
                elif key in ("bootstrap", "seed", "min_stratum", "gallery_n", "max_pixels"):
                    if isinstance(val, bool) or int(val) != val:
                        raise ValueError
                    kw[key] = int(val)
                else:
                    kw[key] = float(val)
            except (TypeError, ValueError):
                raise ValueError(f"report.{key}: invalid value {val!r}") from None
        cfg = cls(**kw)
        checks = {
            "bootstrap": cfg.bootstrap >= 1,
            "ci": 0.0 < cfg.ci < 1.0,
            "threshold_percentile": 0.0 <= cfg.threshold_percentile <= 100.0,
            "age_bands": len(cfg.age_bands) >= 2 and all(np.diff(cfg.age_bands) > 0),
            "min_stratum": cfg.min_stratum >= 1,
            "gallery_n": cfg.gallery_n >= 0,
            "target_specificity": 0.0 < cfg.target_specificity < 1.0,
            "target_sensitivity": 0.0 < cfg.target_sensitivity < 1.0,
            "max_pixels": cfg.max_pixels >= 2,
        }
        for key, ok in checks.items():
            if not ok:
                raise ValueError(f"report.{key}: invalid value {getattr(cfg, key)!r}")
        return cfg

    @property
    def ci_key(self) -> str:  # "ci95" at the default level
        return f"ci{round(self.ci * 100):d}"

    @property
    def sens_key(self) -> str:
        return f"sens_at_{round(self.target_specificity * 100):d}spec"

    @property
    def spec_key(self) -> str:
        return f"spec_at_{round(self.target_sensitivity * 100):d}sens"


def age_band_labels(edges: Sequence[int]) -> list[str]:
    """[0, 30, 45, 200] -> ["0-30", "30-45", "45+"] (bands are [lo, hi); hi >= 120 is open)."""
    return [f"{lo}+" if hi >= 120 else f"{lo}-{hi}" for lo, hi in zip(edges[:-1], edges[1:])]


# --------------------------------------------------------------------------- inputs


@dataclass
class ModelMaps:
    """Contents of ``reports/maps/<arch>.npz`` (test rows, in the scores' order)."""

    image: np.ndarray  # (N,) str
    amap: np.ndarray  # (N, S, S) anomaly maps
    recon: np.ndarray | None = None  # (N, S, S) reconstructions in [0, 1]
    meta: dict = field(default_factory=dict)


@dataclass
class ReportInputs:
    scores: dict[str, pd.DataFrame]
    maps: dict[str, ModelMaps] = field(default_factory=dict)
    test_manifest: pd.DataFrame | None = None
    test_images: np.ndarray | None = None  # (N, S, S) uint8, rows of test_manifest
    boxes: pd.DataFrame | None = None  # image, finding, x, y, w, h in S-pixel coordinates
    train_curves: dict[str, pd.DataFrame] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    reference_val_mse: float | None = None  # val MSE of predicting the mean training image


def mean_image_val_mse(train: np.ndarray, val: np.ndarray, chunk: int = 1024) -> float:
    """Per-pixel MSE on ``val`` of the mean training image (uint8 arrays, scaled to [0, 1]).

    The reference a reconstruction model must beat: one that does worse has learned less than
    the average training image. Chunked, so a memory-mapped training set is never loaded whole.
    """
    if len(train) == 0 or len(val) == 0:
        raise ValueError("mean_image_val_mse: empty training or validation set")
    total = np.zeros(train.shape[1:], dtype=np.float64)
    for i in range(0, len(train), chunk):
        total += np.asarray(train[i : i + chunk], dtype=np.float64).sum(axis=0)
    mean = total / (255.0 * len(train))
    err = 0.0
    for i in range(0, len(val), chunk):
        v = np.asarray(val[i : i + chunk], dtype=np.float64) / 255.0
        err += float(((v - mean) ** 2).sum())
    return err / (len(val) * mean.size)


def load_maps(path: str | os.PathLike) -> ModelMaps:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta_json"][()])) if "meta_json" in z.files else {}
        recon = z["recon"] if "recon" in z.files else None
        return ModelMaps(image=z["image"].astype(str), amap=z["map"], recon=recon, meta=meta)


def load_inputs(root: str | os.PathLike, models: Sequence[str]) -> ReportInputs:
    """Read every report input under ``root``; only the score CSVs are required."""
    root = Path(root)
    scores, maps, curves = {}, {}, {}
    for arch in models:
        p = root / SCORES.format(arch=arch)
        if not p.is_file():
            raise FileNotFoundError(f"scores of model {arch!r} not found: {p} (run score@{arch})")
        scores[arch] = pd.read_csv(p, dtype={"image": str, "patient_id": str})
        if (root / MAPS.format(arch=arch)).is_file():
            maps[arch] = load_maps(root / MAPS.format(arch=arch))
        if (root / TRAIN.format(arch=arch)).is_file():
            curves[arch] = pd.read_csv(root / TRAIN.format(arch=arch))
    manifest = images = boxes = None
    if (root / TEST_MANIFEST).is_file():
        manifest = pd.read_csv(root / TEST_MANIFEST, dtype={"image": str, "patient_id": str})
    if manifest is not None and (root / TEST_IMAGES).is_file():
        images = np.load(root / TEST_IMAGES, allow_pickle=False)
        if len(images) != len(manifest):
            raise ValueError(
                f"{TEST_IMAGES} has {len(images)} images, {TEST_MANIFEST} {len(manifest)} rows"
            )
    if (root / BOXES).is_file():
        boxes = pd.read_csv(root / BOXES, dtype={"image": str, "finding": str})
    summary = json.loads((root / SUMMARY).read_text()) if (root / SUMMARY).is_file() else {}
    reference = None
    if (root / TRAIN_IMAGES).is_file() and (root / VAL_IMAGES).is_file():
        reference = mean_image_val_mse(
            np.load(root / TRAIN_IMAGES, mmap_mode="r"), np.load(root / VAL_IMAGES, mmap_mode="r")
        )
    return ReportInputs(scores, maps, manifest, images, boxes, curves, summary, reference)


def _training_metrics(inputs: ReportInputs, models: Sequence[str]) -> dict:
    """Per model, from ``reports/train/<arch>.csv``: validation loss before training (epoch 0),
    at the selected epoch, and their ratio; plus the mean-image reference."""
    out: dict[str, Any] = {"reference_val_mse": inputs.reference_val_mse, "models": {}}
    for arch in models:
        df = inputs.train_curves.get(arch)
        if df is None or "val_loss" not in df or not df["val_loss"].notna().any():
            continue
        val = df["val_loss"].to_numpy(dtype=np.float64)
        epochs = df["epoch"].to_numpy() if "epoch" in df else np.arange(1, len(df) + 1)
        trained = epochs > 0
        if not trained.any():
            continue
        best_i = int(np.nanargmin(np.where(trained, val, np.inf)))
        initial = float(val[~trained][0]) if (~trained).any() else None
        best = float(val[best_i])
        ref = inputs.reference_val_mse
        out["models"][arch] = {
            "epochs_run": int(trained.sum()),
            "best_epoch": int(epochs[best_i]),
            "initial_val_loss": initial,
            "best_val_loss": best,
            "best_over_initial": best / initial if initial else None,
            "best_over_reference": best / ref if ref else None,
        }
    return out


def _prepare_scores(df: pd.DataFrame, arch: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(test rows sorted by image, validation normal rows) of one score table."""
    missing = {"image", "split", "label", "score"} - set(df.columns)
    if missing:
        raise ValueError(f"scores of {arch!r} lack columns {sorted(missing)}")
    df = df.copy()
    df["label"] = df["label"].astype(int)
    if not df["label"].isin((0, 1)).all():
        raise ValueError(f"scores of {arch!r}: label must be 0 or 1")
    if not np.isfinite(df["score"].to_numpy(dtype=np.float64)).all():
        raise ValueError(f"scores of {arch!r}: non-finite scores")
    for col in ("view", "sex", "findings"):
        if col in df:
            df[col] = df[col].fillna("").astype(str)
    test = df[df["split"] == "test"].sort_values("image", kind="mergesort").reset_index(drop=True)
    if test["image"].duplicated().any():
        raise ValueError(f"scores of {arch!r}: duplicate test images")
    val = df[(df["split"] == "val") & (df["label"] == 0)].reset_index(drop=True)
    return test, val


# --------------------------------------------------------------------------- computation


def _seed(cfg: ReportConfig, key: str) -> int:
    """A fixed seed per stratum name: the same for every model, so resamples are paired."""
    return int(np.random.SeedSequence([cfg.seed, zlib.crc32(key.encode())]).generate_state(1)[0])


def _clusters(df: pd.DataFrame, cfg: ReportConfig) -> np.ndarray | None:
    """Clusters of the rows of ``df`` for the bootstrap and DeLong: patient IDs, or None to
    treat images as independent."""
    if cfg.unit == "patient" and "patient_id" in df:
        return df["patient_id"].astype(str).to_numpy()
    return None


def _boot_ci(
    y: np.ndarray,
    s: np.ndarray,
    metric: Any,
    cfg: ReportConfig,
    key: str,
    clusters: np.ndarray | None,
) -> list[float]:
    """The report's bootstrap interval of ``metric``: B, level and unit from ``cfg``, and a
    seed fixed per stratum ``key`` (so every model and baseline sees the same resamples)."""
    return list(
        stats.bootstrap_ci(
            y,
            s,
            metric,
            n_boot=cfg.bootstrap,
            seed=_seed(cfg, key),
            ci=cfg.ci,
            clusters=clusters,
        )
    )


def _stratum(
    y: np.ndarray,
    s: np.ndarray,
    cfg: ReportConfig,
    key: str,
    thr: float | None,
    clusters: np.ndarray | None = None,
) -> dict:
    n_abn, n_norm = int(np.sum(y == 1)), int(np.sum(y == 0))
    out: dict[str, Any] = {
        "auroc": None,
        f"auroc_{cfg.ci_key}": None,
        "n_normal": n_norm,
        "n_abnormal": n_abn,
    }
    if n_norm >= cfg.min_stratum and n_abn >= cfg.min_stratum:
        out["auroc"] = metrics.auroc(y, s)
        out[f"auroc_{cfg.ci_key}"] = _boot_ci(y, s, metrics.auroc, cfg, key, clusters)
    if thr is not None and len(y):
        op = metrics.operating_point(y, s, thr)
        out["sensitivity"] = op["sensitivity"] if n_abn else None
        out["specificity"] = op["specificity"] if n_norm else None
    return out


def _findings(series: pd.Series) -> list[set[str]]:
    return [
        {f.strip() for f in str(v).split("|") if f.strip() and f.strip() != NO_FINDING}
        for v in series
    ]


def _ordered(values: Sequence[str], preferred: Sequence[str]) -> list[str]:
    present = [v for v in dict.fromkeys(values) if v != ""]
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def _strata(test: pd.DataFrame, cfg: ReportConfig, thr: float | None) -> dict[str, dict]:
    y, s = test["label"].to_numpy(), test["score"].to_numpy(dtype=np.float64)
    g = _clusters(test, cfg)

    def sub(m: np.ndarray) -> np.ndarray | None:
        return None if g is None else g[m]

    out: dict[str, dict] = {}
    for col, name, pref in (("view", "by_view", VIEW_ORDER), ("sex", "by_sex", SEX_ORDER)):
        out[name] = {}
        if col in test:
            for v in _ordered(test[col].tolist(), pref):
                m = (test[col] == v).to_numpy()
                out[name][v] = _stratum(y[m], s[m], cfg, f"{name}/{v}", thr, sub(m))
    out["by_age"] = {}
    if "age" in test:
        age = pd.to_numeric(test["age"], errors="coerce").to_numpy(dtype=np.float64)
        edges = cfg.age_bands
        for lo, hi, label in zip(edges[:-1], edges[1:], age_band_labels(edges)):
            m = (age >= lo) & (age < hi)
            out["by_age"][label] = _stratum(y[m], s[m], cfg, f"by_age/{label}", thr, sub(m))
    out["by_finding"] = {}
    if "findings" in test:
        sets = _findings(test["findings"])
        for f in sorted(set().union(*sets)) if sets else []:
            m = (y == 0) | np.array([(f in fs) and lab == 1 for fs, lab in zip(sets, y)])
            out["by_finding"][f] = _stratum(y[m], s[m], cfg, f"by_finding/{f}", thr, sub(m))
    return out


def _boxes_by_image(boxes: pd.DataFrame | None) -> dict[str, list[tuple[str, tuple]]]:
    out: dict[str, list] = {}
    if boxes is None or boxes.empty:
        return out
    for r in boxes.itertuples(index=False):
        box = (float(r.x), float(r.y), float(r.w), float(r.h))
        out.setdefault(str(r.image), []).append((str(getattr(r, "finding", "")), box))
    return out


def _localization(mm: ModelMaps, test: pd.DataFrame, boxes: dict, cfg: ReportConfig) -> dict:
    abnormal = set(test.loc[test["label"] == 1, "image"])
    idx = [i for i, im in enumerate(mm.image) if im in boxes and im in abnormal]
    # a float16 overflow must not crash the report: inf -> float32 max, nan -> 0
    amap = np.nan_to_num(np.asarray(mm.amap, dtype=np.float32), nan=0.0, neginf=0.0)
    blist = [[b for _, b in boxes[mm.image[i]]] for i in idx]
    res = localization.localization_summary(
        amap[idx] if idx else amap[:0], blist, max_pixels=cfg.max_pixels, seed=cfg.seed
    )
    by_f: dict[str, dict] = {}
    if idx:
        for f in sorted({f for i in idx for f, _ in boxes[mm.image[i]]}):
            sel = [k for k, i in enumerate(idx) if any(g == f for g, _ in boxes[mm.image[i]])]
            fb = [[b for g, b in boxes[mm.image[idx[k]]] if g == f] for k in sel]
            hits = localization.localization_hits(amap[[idx[k] for k in sel]], fb)
            by_f[f] = {"hit_rate": float(hits.mean()), "n_images": len(sel)}
    res["by_finding"] = by_f
    return res


def _model_metrics(
    test: pd.DataFrame, val: pd.DataFrame, mm: ModelMaps | None, boxes: dict, cfg: ReportConfig
) -> dict:
    y, s = test["label"].to_numpy(), test["score"].to_numpy(dtype=np.float64)
    g = _clusters(test, cfg)
    ck = cfg.ci_key
    out: dict[str, Any] = {}
    both = (y == 1).any() and (y == 0).any()
    out["auroc"] = metrics.auroc(y, s) if both else None
    out[f"auroc_{ck}"] = _boot_ci(y, s, metrics.auroc, cfg, "pooled", g) if both else None
    out[f"auroc_{ck}_delong"] = list(stats.delong_ci(y, s, cfg.ci, g)) if both else None
    out["auprc"] = metrics.auprc(y, s) if both else None
    out[f"auprc_{ck}"] = _boot_ci(y, s, metrics.auprc, cfg, "pooled/auprc", g) if both else None
    out["f1_max"] = metrics.f1_max(y, s) if both else None
    out[cfg.sens_key] = metrics.sens_at_spec(y, s, cfg.target_specificity) if both else None
    out[cfg.spec_key] = metrics.spec_at_sens(y, s, cfg.target_sensitivity) if both else None
    out["n_normal"], out["n_abnormal"] = int((y == 0).sum()), int((y == 1).sum())
    thr = None
    if len(val):
        vs = val["score"].to_numpy(dtype=np.float64)
        thr = metrics.threshold_from_normals(vs, cfg.threshold_percentile)
        op = metrics.operating_point(y, s, thr)
        out["threshold"] = {
            "source": "val normals",
            "percentile": cfg.threshold_percentile,
            "value": thr,
            "n_val_normal": len(vs),
            "val_flagged": float(np.mean(vs > thr)),
            "sensitivity": op["sensitivity"],
            "specificity": op["specificity"],
            "precision": op["precision"],
            "f1": op["f1"],
            "tp": op["tp"],
            "fp": op["fp"],
            "tn": op["tn"],
            "fn": op["fn"],
        }
    else:
        out["threshold"] = {
            "source": "val normals",
            "percentile": cfg.threshold_percentile,
            "value": None,
            "n_val_normal": 0,
        }
    out["score_method"] = dict(mm.meta) if mm is not None else {}
    out.update(_strata(test, cfg, thr))
    if mm is not None and boxes:
        out["localization"] = _localization(mm, test, boxes, cfg)
    else:
        out["localization"] = {
            "hit_rate": None,
            "chance_hit_rate": None,
            "pixel_auroc": None,
            "n_images": 0,
            "n_boxes": 0,
            "by_finding": {},
        }
    return out


def _baseline_features(inputs: ReportInputs, test_images: Sequence[str]) -> pd.DataFrame | None:
    """Per test image: label, view, mean and std intensity (from the prepared arrays)."""
    man, imgs = inputs.test_manifest, inputs.test_images
    if man is None or imgs is None:
        return None
    df = man[["image"]].copy()
    if "label" in man:
        df["label"] = man["label"].astype(int)
    else:
        df["label"] = (man["findings"].astype(str) != NO_FINDING).astype(int)
    df["view"] = man["view"].astype(str) if "view" in man else ""
    mean, std = np.empty(len(imgs)), np.empty(len(imgs))
    for i in range(0, len(imgs), 1024):  # chunks: the full NIH test set is 25k images
        px = np.asarray(imgs[i : i + 1024], dtype=np.float64).reshape(-1, imgs[0].size) / 255.0
        mean[i : i + 1024], std[i : i + 1024] = px.mean(axis=1), px.std(axis=1)
    df["mean_intensity"], df["std_intensity"] = mean, std
    wanted = set(test_images)
    df = df[df["image"].isin(wanted)] if wanted else df
    return df.sort_values("image", kind="mergesort").reset_index(drop=True)


def _baselines(
    inputs: ReportInputs, ref_test: pd.DataFrame, cfg: ReportConfig
) -> tuple[dict, dict]:
    """Trivial references, their direction fixed a priori (higher/AP = abnormal), never fitted."""
    feats = _baseline_features(inputs, ref_test["image"].tolist())
    scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if feats is not None and len(feats):
        y = feats["label"].to_numpy()
        scores["mean_intensity"] = (y, feats["mean_intensity"].to_numpy())
        scores["std_intensity"] = (y, feats["std_intensity"].to_numpy())
        scores["view_ap"] = (y, (feats["view"] == "AP").to_numpy(dtype=np.float64))
    elif "view" in ref_test:
        scores["view_ap"] = (
            ref_test["label"].to_numpy(),
            (ref_test["view"] == "AP").to_numpy(dtype=np.float64),
        )
    # every baseline score is aligned with feats (or, without it, with ref_test)
    rows = feats if feats is not None and len(feats) else ref_test
    g = _clusters(ref_test, cfg)
    if g is not None:
        g = rows["image"].map(dict(zip(ref_test["image"], g))).to_numpy()
    out = {}
    for name in ("mean_intensity", "std_intensity", "view_ap"):
        if name not in scores:
            out[name] = {"auroc": None, f"auroc_{cfg.ci_key}": None, "n_normal": 0, "n_abnormal": 0}
            continue
        y, s = scores[name]
        both = (y == 1).any() and (y == 0).any()
        out[name] = {
            "auroc": metrics.auroc(y, s) if both else None,
            f"auroc_{cfg.ci_key}": _boot_ci(y, s, metrics.auroc, cfg, "pooled", g)
            if both
            else None,
            "n_normal": int((y == 0).sum()),
            "n_abnormal": int((y == 1).sum()),
        }
    return out, scores


def _comparisons(
    tests: Mapping[str, pd.DataFrame], models: Sequence[str], cfg: ReportConfig
) -> dict:
    out: dict[str, dict] = {}
    for i, a in enumerate(models):
        for b in models[i + 1 :]:
            cols = ["image", "label", "score"] + (
                ["patient_id"] if "patient_id" in tests[a] else []
            )
            m = tests[a][cols].merge(
                tests[b][["image", "label", "score"]], on="image", suffixes=("_a", "_b")
            )
            if (m["label_a"] != m["label_b"]).any():
                raise ValueError(f"{a} and {b} disagree on test labels")
            y = m["label_a"].to_numpy()
            sa, sb = (
                m["score_a"].to_numpy(dtype=np.float64),
                m["score_b"].to_numpy(dtype=np.float64),
            )
            key = f"{a}_vs_{b}"
            if not ((y == 1).any() and (y == 0).any()):
                out[key] = {
                    "delta_auroc": None,
                    f"delta_auroc_{cfg.ci_key}": None,
                    "p_delong": None,
                    "p_holm": None,
                    "n": len(y),
                }
                continue
            g = _clusters(m, cfg)
            t = stats.delong_test(y, sa, sb, ci=cfg.ci, clusters=g)
            boot = stats.paired_bootstrap_ci(
                y,
                sa,
                sb,
                metrics.auroc,
                n_boot=cfg.bootstrap,
                seed=_seed(cfg, "pooled"),
                ci=cfg.ci,
                clusters=g,
            )
            out[key] = {
                "delta_auroc": t["delta"],
                f"delta_auroc_{cfg.ci_key}": list(boot),
                f"delta_auroc_{cfg.ci_key}_delong": t["delta_ci"],
                "z_delong": t["z"],
                "p_delong": t["p"],
                "p_holm": None,
                "n": len(y),
            }
    keys = list(out)
    for key, p in zip(keys, stats.holm([out[k]["p_delong"] for k in keys])):
        out[key]["p_holm"] = p
    return out


def clean_json(obj: Any, ndigits: int = 6) -> Any:
    """numpy -> Python, floats to ``ndigits`` significant digits (small p-values survive),
    NaN/inf -> None (JSON null), tuples -> lists."""
    if isinstance(obj, Mapping):
        return {str(k): clean_json(v, ndigits) for k, v in obj.items()}
    if isinstance(obj, list | tuple | np.ndarray):
        return [clean_json(v, ndigits) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return float(f"{f:.{ndigits}g}") if np.isfinite(f) else None
    return obj


@dataclass
class Analysis:
    """Everything the writers need: the metrics dict plus the per-model frames and curves."""

    metrics: dict
    tests: dict[str, pd.DataFrame]
    vals: dict[str, pd.DataFrame]
    baseline_scores: dict[str, tuple[np.ndarray, np.ndarray]]
    config: ReportConfig
    params: dict
    boxes: dict[str, list[tuple[str, tuple]]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    train_archs: list[str] = field(default_factory=list)


def analyze(inputs: ReportInputs, params: Mapping[str, Any]) -> Analysis:
    """Compute the metrics dict (the metrics.json contract) from loaded inputs."""
    cfg = ReportConfig.from_params(params.get("report"))
    models = [str(m) for m in params.get("models") or inputs.scores]
    if not models:
        raise ValueError("models: no architecture to report on")
    missing = [m for m in models if m not in inputs.scores]
    if missing:
        raise ValueError(f"models {missing} have no scores")
    tests, vals = {}, {}
    for arch in models:
        tests[arch], vals[arch] = _prepare_scores(inputs.scores[arch], arch)
    boxes = _boxes_by_image(inputs.boxes)
    ref = tests[models[0]]
    summary = inputs.summary or {}
    source = (params.get("data") or {}).get("source") or summary.get("source")
    data = {
        "source": source,
        "n_train": summary.get("n_train"),
        "n_val": summary.get("n_val", len(vals[models[0]])),
        "n_test_normal": int((ref["label"] == 0).sum()),
        "n_test_abnormal": int((ref["label"] == 1).sum()),
        "n_test_patients": int(ref["patient_id"].nunique()) if "patient_id" in ref else None,
    }
    model_metrics = {
        arch: _model_metrics(tests[arch], vals[arch], inputs.maps.get(arch), boxes, cfg)
        for arch in models
    }
    base, base_scores = _baselines(inputs, ref, cfg)
    clustered = _clusters(ref, cfg) is not None
    unit = "patient" if clustered else "image"
    result = {
        "data": data,
        "models": model_metrics,
        "baselines": base,
        "comparisons": _comparisons(tests, models, cfg),
        "bootstrap": {"unit": unit, "resamples": cfg.bootstrap, "seed": cfg.seed},
        "delong": {
            "unit": unit,
            "method": "Obuchowski 1997 (clustered)" if clustered else "DeLong 1988",
        },
        "training": _training_metrics(inputs, models),
    }
    return Analysis(
        clean_json(result),
        tests,
        vals,
        base_scores,
        cfg,
        dict(params),
        boxes,
        dict(summary),
        list(inputs.train_curves),
    )


def headline_metrics(result: Mapping[str, Any]) -> dict[str, Any]:
    """The pooled scalars of a metrics dict (no strata, no lists), e.g. for MLflow."""
    out: dict[str, Any] = {"models": {}, "baselines": {}, "comparisons": {}}
    for arch, m in result["models"].items():
        out["models"][arch] = {k: v for k, v in m.items() if isinstance(v, int | float)}
        thr = m.get("threshold") or {}
        out["models"][arch]["threshold"] = {
            k: v for k, v in thr.items() if isinstance(v, int | float) and k != "percentile"
        }
    for name, b in result.get("baselines", {}).items():
        out["baselines"][name] = {"auroc": b.get("auroc")}
    for key, c in result.get("comparisons", {}).items():
        out["comparisons"][key] = {
            k: c.get(k) for k in ("delta_auroc", "z_delong", "p_delong", "p_holm")
        }
    return out


# --------------------------------------------------------------------------- outputs


def _thin(x: np.ndarray, y: np.ndarray, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    if len(x) <= max_points:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, max_points).round().astype(int))
    return x[idx], y[idx]


def _curves(an: Analysis) -> tuple[dict, dict]:
    roc, pr = {}, {}
    for arch, t in an.tests.items():
        y, s = t["label"].to_numpy(), t["score"].to_numpy(dtype=np.float64)
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=True)
            roc[arch] = pd.DataFrame({"fpr": fpr, "tpr": tpr})
            prec, rec, _ = metrics.pr_curve(y, s)
            rec, prec = _thin(rec[::-1], prec[::-1])
            pr[arch] = pd.DataFrame({"recall": rec, "precision": prec})
    return roc, pr


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "—"
    return "<0.0001" if p < 1e-4 else f"{p:.4f}"


def _ci_cell(d: Mapping, key: str, ck: str) -> str:
    v, ci = d.get(key), d.get(f"{key}_{ck}")
    if v is None:
        return "—"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci and None not in ci else f"{v:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _flatten(d: Mapping, prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += _flatten(v, key + ".")
        else:
            out.append((key, v))
    return out


def _generic_counts(obj: Any, title: str) -> str:
    """Render a summary.json count block (dict of numbers or of dicts) as a table."""
    if not isinstance(obj, Mapping) or not obj:
        return ""
    if all(isinstance(v, Mapping) for v in obj.values()):
        cols = list(dict.fromkeys(c for v in obj.values() for c in v))
        rows = [[k] + [_fmt(v.get(c)) for c in cols] for k, v in obj.items()]
        return _table([title] + [str(c) for c in cols], rows)
    return _table([title, "images"], [[k, _fmt(v)] for k, v in obj.items()])


def _wide_strata(an: Analysis, name: str, label: str) -> str:
    m, ck = an.metrics["models"], an.config.ci_key
    archs = list(m)
    keys = list(dict.fromkeys(k for a in archs for k in m[a][name]))
    if not keys:
        return "_not available (column missing from the score tables)_\n"
    first = m[archs[0]][name]
    rows = [
        [k, first.get(k, {}).get("n_normal", "—"), first.get(k, {}).get("n_abnormal", "—")]
        + [_ci_cell(m[a][name].get(k, {}), "auroc", ck) for a in archs]
        for k in keys
    ]
    return _table(
        [label, "normal", "abnormal"] + [f"{a} AUROC [{ck.upper()}]" for a in archs], rows
    )


def _view_operating(an: Analysis) -> str:
    m = an.metrics["models"]
    archs = list(m)
    views = list(dict.fromkeys(k for a in archs for k in m[a]["by_view"]))
    if not views:
        return ""
    rows = [
        [v]
        + [
            f"{_fmt(m[a]['by_view'][v].get('sensitivity'))} / {_fmt(m[a]['by_view'][v].get('specificity'))}"
            for a in archs
        ]
        for v in views
    ]
    rows.append(
        ["pooled"]
        + [
            f"{_fmt(m[a]['threshold'].get('sensitivity'))} / "
            f"{_fmt(m[a]['threshold'].get('specificity'))}"
            for a in archs
        ]
    )
    return _table(["view"] + [f"{a} sens / spec" for a in archs], rows)


def _resampling(result: Mapping[str, Any]) -> str:
    """How the bootstrap of a metrics dict resampled, in words."""
    if (result.get("bootstrap") or {}).get("unit") == "patient":
        return "whole patients resampled, separately for patients with and without an abnormal film"
    return "normals and abnormals resampled separately, film by film"


def _caveats(an: Analysis) -> list[str]:
    m, data = an.metrics, an.metrics["data"]
    ref = next(iter(an.tests.values()))
    out = [
        "**Labels are noisy.** NIH ChestX-ray14 labels were text-mined from radiology reports "
        '(Wang et al., CVPR 2017); "No Finding" is not a radiologist-verified normal and some '
        "findings are missed or hallucinated by the NLP labeller. AUROCs against such labels are "
        "biased (usually downwards) and the per-finding numbers inherit each label's own error.",
    ]
    weak = [
        f"{arch} ({t['best_val_loss']:.4g} vs {m['training']['reference_val_mse']:.4g})"
        for arch, t in (m.get("training") or {}).get("models", {}).items()
        if (t.get("best_over_reference") or 0.0) >= 1.0
    ]
    if weak:
        out.append(
            "**Under-trained models.** The selected validation loss of "
            + ", ".join(weak)
            + " is not below that of predicting the mean training image (section 8): their "
            "reconstructions carry no more information than the average image, and their AUROC "
            "says little about the architecture."
        )
    if data.get("source") == "synthetic":
        out.append(
            "**Synthetic data is not clinical evidence.** This run used the synthetic phantom "
            "mirror: the numbers show that the pipeline works end to end, not how any model "
            "performs on chest X-rays."
        )
    if "view" in ref and ref["view"].isin(["AP"]).any():
        norm, abn = ref[ref["label"] == 0], ref[ref["label"] == 1]
        ap_n = float((norm["view"] == "AP").mean()) if len(norm) else float("nan")
        ap_a = float((abn["view"] == "AP").mean()) if len(abn) else float("nan")
        va = m["baselines"].get("view_ap", {}).get("auroc")
        confounded = [
            a
            for a, mm in m["models"].items()
            if mm["auroc"] is not None
            and all(v.get("auroc") is not None for v in mm["by_view"].values())
            and mm["by_view"]
            and mm["auroc"] > max(v["auroc"] for v in mm["by_view"].values())
        ]
        text = (
            f"**View confounder.** {100 * ap_a:.0f} % of abnormal vs {100 * ap_n:.0f} % of normal "
            f"test images are AP; view alone reaches AUROC {_fmt(va)}. AP films come from sicker, "
            "supine patients and look different (magnified heart, lower contrast, lines and "
            "tubes), so a score that merely differs between views earns pooled AUROC without "
            "seeing any pathology, and a single threshold gives different specificity per view "
            "(section 3). Read the per-view AUROCs (section 4.1) next to the pooled one."
        )
        if confounded:
            text += (
                " For " + ", ".join(confounded) + " the pooled AUROC exceeds every per-view "
                "AUROC: part of its pooled performance comes from the view mix."
            )
        out.append(text)
    n_pat = data.get("n_test_patients")
    if n_pat and n_pat < len(ref):
        text = (
            f"**Images are clustered in patients.** The {len(ref)} test images come from "
            f"{n_pat} patients, and films of one patient are correlated. "
        )
        if m["bootstrap"]["unit"] == "patient":
            text += (
                "The bootstrap resamples patients with all their films (cluster bootstrap), and "
                "DeLong's intervals and p-values (sections 2 and 5) use Obuchowski's clustered "
                "variance, so both account for this."
            )
        else:
            text += (
                "`report.unit: image` treats films as independent, so every interval and "
                "p-value here is somewhat too narrow."
            )
        out.append(text)
    ck = an.config.ci_key
    out += [
        "**Only validation normals set the operating point.** The threshold is the "
        f"{an.config.threshold_percentile:g}th percentile of validation-normal scores; no test "
        "label chose a threshold, checkpoint or hyperparameter. F1-max, "
        f"sensitivity at {100 * an.config.target_specificity:g} % specificity and specificity at "
        f"{100 * an.config.target_sensitivity:g} % sensitivity sweep every threshold on the test "
        "labels: they summarise the ranking (like AUROC) and are not achievable operating points.",
        f"**Intervals and multiplicity.** {ck.upper()} intervals are percentile intervals of a "
        f"stratified bootstrap (B = {an.config.bootstrap}; {_resampling(m)}). Holm's correction covers the architecture comparisons only; the subgroup "
        "intervals are unadjusted and exploratory, and strata with fewer than "
        f"{an.config.min_stratum} normals or abnormals report no AUROC.",
        "**Baselines are fixed, not fitted.** Mean and standard deviation of intensity count as "
        '"higher = abnormal" and view as "AP = abnormal", decided before looking at any label; '
        "an AUROC below 0.5 means the opposite direction would separate the classes.",
    ]
    sal = {
        a: mm["score_method"].get("saliency")
        for a, mm in m["models"].items()
        if mm["score_method"].get("map") == "ra"
    }
    non_lpips = {a: s for a, s in sal.items() if s != "lpips"}
    if non_lpips:
        used = ", ".join(f"{a}: {s}" for a, s in non_lpips.items())
        out.append(
            "**RA saliency.** Bercea et al. (MIDL 2023) weight the CLAHE residual with LPIPS; "
            f"here the RA maps used a download-free saliency ({used}) because no ImageNet "
            "weights are downloaded, so they differ from the paper's maps."
        )
    n_loc = [mm["localization"]["n_images"] for mm in m["models"].values()]
    if max(n_loc, default=0) > 0:
        out.append(
            "**Localization is thin.** NIH boxes exist for 880 images and 8 findings; the hit rate "
            "uses the single argmax pixel of each map and is compared with its chance level "
            "(the fraction of the image covered by boxes)."
        )
    return out


def render_markdown(an: Analysis, *, samples_figure: str | None = None) -> str:
    m, cfg, ck = an.metrics, an.config, an.config.ci_key
    models = list(m["models"])
    data = m["data"]
    ref = next(iter(an.tests.values()))
    n_test = len(ref)
    md: list[str] = []
    md.append("# ImgAE-Dx evaluation report\n")
    md.append(
        f"Source **{data.get('source')}** · models {', '.join(f'`{a}`' for a in models)} · "
        f"{n_test} test images ({data['n_test_normal']} normal, {data['n_test_abnormal']} abnormal) "
        f"· {round(cfg.ci * 100)} % CIs from a stratified bootstrap (B = {cfg.bootstrap}, seed "
        f"{cfg.seed}, {an.metrics['bootstrap']['unit']} level).\n"
    )
    md.append("_Generated by the DVC stage `report` (`python stages/report.py`); do not edit._\n")

    # 1. setup
    md.append("## 1. Setup\n")
    md.append("### Data\n")
    md.append(
        _table(
            ["split", "images"],
            [
                ["train (normals)", _fmt(data.get("n_train"))],
                ["val (normals, threshold and model selection)", _fmt(data.get("n_val"))],
                ["test normal", data["n_test_normal"]],
                ["test abnormal", data["n_test_abnormal"]],
            ],
        )
    )
    if "view" in ref:
        views = _ordered(ref["view"].tolist(), VIEW_ORDER)
        rows = []
        for v in views:
            nn = int(((ref["view"] == v) & (ref["label"] == 0)).sum())
            na = int(((ref["view"] == v) & (ref["label"] == 1)).sum())
            rows.append(
                [
                    v,
                    nn,
                    na,
                    f"{100 * nn / max(data['n_test_normal'], 1):.1f} %",
                    f"{100 * na / max(data['n_test_abnormal'], 1):.1f} %",
                ]
            )
        md.append("\n### Test set by view\n")
        md.append(_table(["view", "normal", "abnormal", "% of normals", "% of abnormals"], rows))
    if "findings" in ref:
        sets = _findings(ref["findings"])
        counts: dict[str, int] = {}
        for s in sets:
            for f in s:
                counts[f] = counts.get(f, 0) + 1
        abn = ref[ref["label"] == 1]
        boxed: dict[str, int] = {}
        for im, fs in zip(abn["image"], _findings(abn["findings"])):
            box_f = {g for g, _ in an.boxes.get(im, [])}
            for f in fs:
                # NIH's box list spells Infiltration "Infiltrate"
                if f in box_f or (f == "Infiltration" and "Infiltrate" in box_f):
                    boxed[f] = boxed.get(f, 0) + 1
        md.append("\n### Test abnormal images by finding\n")
        md.append("A multi-label image counts once for each of its findings.\n\n")
        md.append(
            _table(
                ["finding", "images", "with a box of it"],
                [[f, counts[f], boxed.get(f, 0)] for f in sorted(counts)],
            )
            if counts
            else "_no abnormal test images_\n"
        )
    summ = [(k, an.summary.get(k)) for k in ("by_view", "by_finding")]
    for key, val in summ:
        tab = _generic_counts(val, key.replace("by_", ""))
        if tab:
            md.append(f"\n### All splits by {key.replace('by_', '')} (data/split/summary.json)\n")
            md.append(tab)
    md.append("\n### Scoring\n")
    md.append(
        _table(
            ["model", "map", "saliency", "reduce", "smoothing σ"],
            [
                [
                    a,
                    _fmt(m["models"][a]["score_method"].get("map")),
                    _fmt(m["models"][a]["score_method"].get("saliency")),
                    _fmt(m["models"][a]["score_method"].get("reduce")),
                    _fmt(m["models"][a]["score_method"].get("smooth_sigma")),
                ]
                for a in models
            ],
        )
    )
    md.append("\n### Parameters\n")
    shown = {
        k: an.params[k] for k in ("seed", "data", "train", "score", "report") if k in an.params
    }
    arch_block = an.params.get("arch") or {}
    shown["arch"] = {a: arch_block[a] for a in models if a in arch_block}
    shown["models"] = models
    prow = [
        [f"`{k}`", f"`{json.dumps(v, sort_keys=True, default=str)}`"] for k, v in _flatten(shown)
    ]
    md.append(_table(["parameter", "value"], prow))
    if samples_figure:
        md.append(f"\n![Sample images]({samples_figure})\n")

    # 2. detection
    md.append("\n## 2. Image-level detection (test set)\n")
    sk, pk = cfg.sens_key, cfg.spec_key
    rows = []
    for a in models:
        mm = m["models"][a]
        rows.append(
            [
                f"**{a}**",
                _ci_cell(mm, "auroc", ck),
                _ci_cell(mm, "auprc", ck),
                _fmt(mm["f1_max"]),
                _fmt(mm[sk]),
                _fmt(mm[pk]),
                f"{mm['n_normal']} / {mm['n_abnormal']}",
            ]
        )
    names = {
        "mean_intensity": "mean intensity",
        "std_intensity": "intensity std",
        "view_ap": "view (AP)",
    }
    for b, bm in m["baselines"].items():
        rows.append(
            [
                f"_baseline: {names.get(b, b)}_",
                _ci_cell(bm, "auroc", ck),
                "—",
                "—",
                "—",
                "—",
                f"{bm['n_normal']} / {bm['n_abnormal']}",
            ]
        )
    md.append(
        _table(
            [
                "model",
                f"AUROC [{ck.upper()}]",
                f"AUPRC [{ck.upper()}]",
                "F1-max",
                f"sens @ {100 * cfg.target_specificity:g} % spec",
                f"spec @ {100 * cfg.target_sensitivity:g} % sens",
                "normal / abnormal",
            ],
            rows,
        )
    )
    md.append(
        f"\nAUROC and AUPRC intervals: stratified bootstrap ({_resampling(an.metrics)}). F1-max and the sens/spec columns sweep "
        "all thresholds on the test labels (ranking summaries, not operating points). "
        f"DeLong {ck.upper()} of the AUROC: "
        + "; ".join(
            f"{a} [{m['models'][a][f'auroc_{ck}_delong'][0]:.3f}, {m['models'][a][f'auroc_{ck}_delong'][1]:.3f}]"
            for a in models
            if m["models"][a].get(f"auroc_{ck}_delong")
        )
        + ".\n"
    )
    md.append("\n![ROC curves](figures/roc.png)\n")
    md.append("\n![Precision-recall curves](figures/pr.png)\n")

    # 3. operating point
    md.append("\n## 3. Operating point chosen on validation normals\n")
    md.append(
        f"Threshold = {cfg.threshold_percentile:g}th percentile of each model's validation-normal "
        "scores (no test label involved); an image is flagged when its score exceeds it.\n\n"
    )
    rows = []
    for a in models:
        t = m["models"][a]["threshold"]
        rows.append(
            [
                a,
                _fmt(t.get("value"), 5),
                t.get("n_val_normal", 0),
                _fmt(t.get("val_flagged")),
                _fmt(t.get("sensitivity")),
                _fmt(t.get("specificity")),
                _fmt(t.get("precision")),
                _fmt(t.get("f1")),
            ]
        )
    md.append(
        _table(
            [
                "model",
                "threshold",
                "val normals",
                "val flagged",
                "test sensitivity",
                "test specificity",
                "test precision",
                "test F1",
            ],
            rows,
        )
    )
    vo = _view_operating(an)
    if vo:
        md.append("\nSensitivity / specificity at this threshold by view:\n\n" + vo)

    # 4. subgroups
    md.append("\n## 4. Subgroups\n")
    md.append(
        f"Each stratum's normals against its abnormals; strata with fewer than {cfg.min_stratum} "
        "of either report no AUROC (—). Columns `normal`/`abnormal` count the first model's rows.\n"
    )
    md.append("\n### 4.1 By view\n")
    md.append(_wide_strata(an, "by_view", "view"))
    md.append("\n### 4.2 By sex\n")
    md.append(_wide_strata(an, "by_sex", "sex"))
    md.append("\n### 4.3 By age band\n")
    md.append("Bands are [lower, upper) years.\n\n" + _wide_strata(an, "by_age", "age"))
    md.append("\n### 4.4 By finding\n")
    md.append(
        "Each finding's images (multi-label images in every finding they carry) against all "
        "test normals.\n\n" + _wide_strata(an, "by_finding", "finding")
    )

    # 5. comparisons
    md.append("\n## 5. Architecture comparisons (same test images)\n")
    if m["comparisons"]:
        rows = []
        for k, c in m["comparisons"].items():
            ci_b, ci_d = c.get(f"delta_auroc_{ck}"), c.get(f"delta_auroc_{ck}_delong")
            rows.append(
                [
                    k.replace("_vs_", " − "),
                    _fmt(c["delta_auroc"]),
                    f"[{ci_b[0]:.3f}, {ci_b[1]:.3f}]" if ci_b else "—",
                    f"[{ci_d[0]:.3f}, {ci_d[1]:.3f}]" if ci_d else "—",
                    _fmt(c.get("z_delong"), 2),
                    _fmt_p(c["p_delong"]),
                    _fmt_p(c["p_holm"]),
                ]
            )
        md.append(
            _table(
                [
                    "comparison",
                    "ΔAUROC",
                    f"{ck.upper()} paired bootstrap",
                    f"{ck.upper()} DeLong",
                    "z",
                    "p (DeLong)",
                    "p (Holm)",
                ],
                rows,
            )
        )
        md.append(
            "\nDeLong's test for correlated ROC curves (DeLong et al. 1988, fast algorithm of "
            "Sun & Xu 2014)"
            + (
                ", with Obuchowski's (1997) clustered variance over patients"
                if (m.get("delong") or {}).get("unit") == "patient"
                else ", films treated as independent"
            )
            + "; Holm's step-down correction over all pairs.\n"
        )
    else:
        md.append("_Only one model: nothing to compare._\n")

    # 6. localization
    md.append("\n## 6. Localization (test abnormal images with NIH boxes)\n")
    rows = []
    for a in models:
        loc = m["models"][a]["localization"]
        rows.append(
            [
                a,
                loc["n_images"],
                loc["n_boxes"],
                _fmt(loc["hit_rate"]),
                _fmt(loc["chance_hit_rate"]),
                _fmt(loc["pixel_auroc"]),
            ]
        )
    if any(m["models"][a]["localization"]["n_images"] for a in models):
        md.append(
            _table(
                [
                    "model",
                    "images",
                    "boxes",
                    "hit rate (argmax in box)",
                    "chance",
                    "pixel AUROC (in vs out)",
                ],
                rows,
            )
        )
        fnd = sorted({f for a in models for f in m["models"][a]["localization"]["by_finding"]})
        if fnd:
            md.append("\nHit rate by boxed finding (images):\n\n")
            md.append(
                _table(
                    ["finding"] + models,
                    [
                        [f]
                        + [
                            (lambda d: f"{d['hit_rate']:.3f} ({d['n_images']})" if d else "—")(
                                m["models"][a]["localization"]["by_finding"].get(f)
                            )
                            for a in models
                        ]
                        for f in fnd
                    ],
                )
            )
    else:
        md.append(
            "_No test abnormal image with a bounding box (or no anomaly maps): not available._\n"
        )
    md.append(
        f"\n![Gallery](figures/gallery.png)\n\nGallery: for each model, the {cfg.gallery_n} highest- and "
        "lowest-scored abnormal and normal test images; rows show input, reconstruction and anomaly "
        "map (one colour scale per model), green boxes are NIH annotations.\n"
    )

    # 7-8 figures
    md.append("\n## 7. Score distributions\n")
    md.append("\n![Score distributions](figures/score_dist.png)\n")
    md.append("\n## 8. Training curves\n")
    missing = [a for a in models if a not in an.train_archs]
    md.append("\n![Training curves](figures/train_curves.png)\n")
    if missing:
        md.append(f"\n_No training curves for {', '.join(missing)}._\n")
    md.append("\nEarly stopping and checkpoint choice use the validation-normal loss only.\n")
    tr = an.metrics.get("training") or {}
    if tr.get("models"):
        ref = tr.get("reference_val_mse")
        rows = [
            [
                arch,
                _fmt(t.get("epochs_run")),
                _fmt(t.get("best_epoch")),
                _fmt(t.get("initial_val_loss"), 5),
                _fmt(t.get("best_val_loss"), 5),
                _fmt(t.get("best_over_initial"), 3),
                _fmt(t.get("best_over_reference"), 3),
            ]
            for arch, t in tr["models"].items()
        ]
        md.append(
            _table(
                [
                    "model",
                    "epochs",
                    "best epoch",
                    "val loss, untrained",
                    "val loss, selected",
                    "selected / untrained",
                    "selected / mean image",
                ],
                rows,
            )
        )
        md.append(
            "\nValidation losses are the architectures' own label-free objectives (per-pixel MSE "
            "of the reconstruction; the U-Net's of its denoised input, the VAE's plus its small KL "
            "term). _Mean image_: the per-pixel MSE on the validation normals of predicting every "
            f"image by the mean training image ({_fmt(ref, 5)}); a model at or above 1 there has "
            "learned less than that average.\n"
        )

    # 9. caveats
    md.append("\n## 9. Caveats\n")
    md.append("\n".join(f"- {c}" for c in _caveats(an)) + "\n")
    return "\n\n".join(chunk.strip("\n") for chunk in md if chunk.strip()) + "\n"


def _gallery_blocks(an: Analysis, inputs: ReportInputs) -> dict[str, list[plots.GalleryItem]]:
    n = an.config.gallery_n
    boxes = _boxes_by_image(inputs.boxes)
    man_idx = {}
    if inputs.test_manifest is not None and inputs.test_images is not None:
        man_idx = {im: i for i, im in enumerate(inputs.test_manifest["image"].astype(str))}
    blocks: dict[str, list[plots.GalleryItem]] = {}
    for arch, test in an.tests.items():
        mm = inputs.maps.get(arch)
        map_idx = {im: i for i, im in enumerate(mm.image)} if mm is not None else {}
        items = []
        for lab, name in ((1, "abnormal"), (0, "normal")):
            grp = test[test["label"] == lab].sort_values(["score", "image"], kind="mergesort")
            for which, sel in (("high", grp.iloc[::-1][:n]), ("low", grp.iloc[:n])):
                for r in sel.itertuples(index=False):
                    img = (
                        inputs.test_images[man_idx[r.image]].astype(np.float32) / 255.0
                        if r.image in man_idx
                        else None
                    )
                    j = map_idx.get(r.image)
                    recon = (
                        mm.recon[j].astype(np.float32)
                        if j is not None and mm.recon is not None
                        else None
                    )
                    amap = mm.amap[j].astype(np.float32) if j is not None else None
                    if img is None:
                        img = recon if recon is not None else np.zeros((2, 2), np.float32)
                    items.append(
                        plots.GalleryItem(
                            title=f"{name}, {which}\n{r.image}\ns={r.score:.3g}",
                            image=img,
                            recon=recon,
                            amap=amap,
                            boxes=[b for _, b in boxes.get(r.image, [])],
                        )
                    )
        blocks[arch] = items
    return blocks


def make_report(
    inputs: ReportInputs, params: Mapping[str, Any], out_dir: str | os.PathLike = "reports"
) -> dict:
    """Compute metrics and write, atomically, under ``out_dir``: metrics.json,
    plots/{roc,pr}/<arch>.csv, figures/{roc,pr,score_dist,gallery,train_curves}.png and
    report.md. Returns the metrics dict (the contents of metrics.json)."""
    out = Path(out_dir)
    an = analyze(inputs, params)
    ck = an.config.ci_key
    mdl = an.metrics["models"]

    roc, pr = _curves(an)
    for kind, frames in (("roc", roc), ("pr", pr)):
        with atomic_dir(out / "plots" / kind) as tmp:
            for arch, df in frames.items():
                df.to_csv(
                    tmp / f"{arch}.csv", index=False, float_format="%.6g", lineterminator="\n"
                )

    def label(a: str, key: str) -> str:
        d = mdl[a]
        ci = d.get(f"{key}_{ck}")
        ci_s = f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""
        return f"{a}: {key.upper()} {d[key]:.3f}{ci_s}" if d.get(key) is not None else a

    roc_curves = [
        plots.Curve(df["fpr"].to_numpy(), df["tpr"].to_numpy(), label(a, "auroc"))
        for a, df in roc.items()
    ]
    base_names = {
        "mean_intensity": "mean intensity",
        "std_intensity": "intensity std",
        "view_ap": "view (AP)",
    }
    base_curves = []
    for b, (y, s) in an.baseline_scores.items():
        if (y == 1).any() and (y == 0).any():
            fpr, tpr, _ = metrics.roc_curve(y, s, drop_intermediate=True)
            bm = an.metrics["baselines"][b]
            base_curves.append(plots.Curve(fpr, tpr, f"{base_names[b]}: AUROC {bm['auroc']:.3f}"))
    save_figure(plots.roc_figure(roc_curves, base_curves), out / "figures" / "roc.png")
    pr_curves = [
        plots.Curve(df["recall"].to_numpy(), df["precision"].to_numpy(), label(a, "auprc"))
        for a, df in pr.items()
    ]
    d = an.metrics["data"]
    n_all = d["n_test_normal"] + d["n_test_abnormal"]
    prev = d["n_test_abnormal"] / n_all if n_all else None
    save_figure(plots.pr_figure(pr_curves, prev), out / "figures" / "pr.png")

    groups = {}
    for a, t in an.tests.items():
        thr = mdl[a]["threshold"].get("value")
        groups[a] = plots.ScoreGroups(
            val_normal=an.vals[a]["score"].to_numpy(dtype=np.float64),
            test_normal=t.loc[t["label"] == 0, "score"].to_numpy(dtype=np.float64),
            test_abnormal=t.loc[t["label"] == 1, "score"].to_numpy(dtype=np.float64),
            threshold=thr,
        )
    save_figure(plots.score_dist_figure(groups), out / "figures" / "score_dist.png")
    save_figure(plots.gallery_figure(_gallery_blocks(an, inputs)), out / "figures" / "gallery.png")
    save_figure(
        plots.train_curves_figure(inputs.train_curves), out / "figures" / "train_curves.png"
    )

    source = d.get("source")
    samples = (
        f"figures/{source}_samples.png"
        if source and (out / "figures" / f"{source}_samples.png").is_file()
        else None
    )
    write_text(out / "report.md", render_markdown(an, samples_figure=samples))
    write_json(out / "metrics.json", an.metrics)
    return an.metrics
