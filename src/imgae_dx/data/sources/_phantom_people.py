"""Who is in the synthetic dataset: patients, follow-ups, views, labels and lesion timelines.

Everything here is drawn in the parent process from seeded generators, so the plan of the
whole dataset (and hence every metadata file) is fixed before any image is rendered. Each
image then carries a *spec* (a plain dict) that a worker renders on its own; the worker count
never changes a byte.

Shapes follow NIH ChestX-ray14 (``docs/architecture.md``, "Data sources"): ~3.6 images per
patient with a heavy tail, "No Finding" the majority, ~1.6 labels per abnormal image with the
NIH label mix, findings that persist or resolve across follow-ups, test patients slightly
sicker with more follow-ups, sicker patients more often imaged AP.
"""

from __future__ import annotations

import numpy as np

from imgae_dx.data import nih

#: Image counts of each label in NIH ChestX-ray14 (Wang et al. 2017): the onset mix.
NIH_LABEL_COUNTS: dict[str, int] = {
    "Atelectasis": 11559,
    "Cardiomegaly": 2776,
    "Consolidation": 4667,
    "Edema": 2303,
    "Effusion": 13317,
    "Emphysema": 2516,
    "Fibrosis": 1686,
    "Hernia": 227,
    "Infiltration": 19894,
    "Mass": 5782,
    "Nodule": 6331,
    "Pleural_Thickening": 3385,
    "Pneumonia": 1431,
    "Pneumothorax": 5302,
}
#: Probability that a lesion seen on one abnormal image is still there on the next one.
#: Chronic findings persist; acute ones resolve.
KEEP: dict[str, float] = {
    "Atelectasis": 0.45,
    "Cardiomegaly": 0.9,
    "Consolidation": 0.4,
    "Edema": 0.4,
    "Effusion": 0.55,
    "Emphysema": 0.9,
    "Fibrosis": 0.9,
    "Hernia": 0.9,
    "Infiltration": 0.4,
    "Mass": 0.85,
    "Nodule": 0.85,
    "Pleural_Thickening": 0.85,
    "Pneumonia": 0.3,
    "Pneumothorax": 0.3,
}
#: Findings that tend to come together: (given, also, probability).
CO_OCCUR: tuple[tuple[str, str, float], ...] = (
    ("Edema", "Effusion", 0.45),
    ("Edema", "Cardiomegaly", 0.3),
    ("Cardiomegaly", "Effusion", 0.25),
    ("Pneumonia", "Infiltration", 0.35),
    ("Consolidation", "Effusion", 0.15),
    ("Mass", "Nodule", 0.15),
    ("Emphysema", "Nodule", 0.1),
)
#: (width, height, pixel spacing mm) of NIH originals, roughly in their proportions.
ORIGINAL_SIZES: tuple[tuple[int, int, float], ...] = (
    (2500, 2048, 0.168),
    (2048, 2500, 0.168),
    (2992, 2991, 0.143),
    (3056, 2544, 0.139),
    (2500, 2048, 0.171),
    (2021, 2021, 0.194),
)
#: Persistence of the per-patient abnormal/normal state between consecutive images.
STATE_RHO = 0.55
#: Label mix in the NIH proportions, corrected for persistence (chronic findings accumulate
#: over follow-ups, so their onsets are rarer than their image counts).
_ONSET = np.array([NIH_LABEL_COUNTS[lab] * (1.0 - 0.6 * KEEP[lab]) for lab in nih.LABELS])
ONSET_P = _ONSET / _ONSET.sum()


def _n_followups(rng: np.random.Generator, n: int, mean: float) -> np.ndarray:
    """Heavy-tailed image counts per patient (>= 1): 1 + negative binomial, capped at 60."""
    r = 0.55  # dispersion: many single-image patients and a long tail, like NIH
    m = max(mean - 1.0, 1e-3)
    k = rng.negative_binomial(r, r / (r + m), size=n)
    return 1 + np.minimum(k, 59)


def sample_anatomy(rng: np.random.Generator, sex: str, age: int) -> dict:
    """Patient-level anatomy in the phantom's normalised frame (frame width = 2 units ~ 40 cm)."""
    child = age < 16
    scale = 1.0 if not child else 0.82 + 0.012 * age
    w = rng.normal(0.75, 0.035) * scale - (0.025 if sex == "F" else 0.0)
    return {
        "W": float(np.clip(w, 0.56, 0.86)),  # lung lateral half-width
        "margin": float(np.clip(rng.gamma(4.0, 0.02) + (0.02 if sex == "F" else 0.0), 0.04, 0.25)),
        "apex_v": float(rng.normal(-0.64, 0.03)),
        "cp_v": float(rng.normal(0.54, 0.035)),  # costophrenic angles at full inspiration
        "dome_rise": float(np.clip(rng.normal(0.2, 0.03), 0.1, 0.3)),
        "ctr": float(np.clip(rng.normal(0.45 + (0.04 if child else 0.0), 0.03), 0.36, 0.53)),
        "heart_ratio": float(np.clip(rng.normal(0.74, 0.05), 0.6, 0.9)),
        "heart_tilt": float(np.deg2rad(rng.normal(24.0, 5.0))),
        "heart_x": float(rng.normal(0.06, 0.02)),
        "knob": float(np.clip(0.035 + 0.0007 * max(age - 30, 0) + rng.normal(0, 0.01), 0.02, 0.09)),
        "med_w": float(np.clip(rng.normal(0.085, 0.01), 0.06, 0.11)),
        "rib_slope": float(rng.normal(0.0, 0.015)),
        "rib_dv": float(np.clip(rng.normal(0.118, 0.006), 0.1, 0.135)),
        "breast": float(rng.uniform(0.35, 1.0) if sex == "F" and age >= 14 else 0.0),
        "right_dome": float(rng.normal(-0.03, 0.015)),  # right dome higher (liver)
        "scoliosis": float(rng.normal(0.0, 0.012)),
        "bone": float(np.clip(rng.normal(1.0 - 0.004 * max(age - 50, 0), 0.12), 0.5, 1.4)),
        "vessel_seed": int(rng.integers(0, 2**31 - 1)),
        "tissue_seed": int(rng.integers(0, 2**31 - 1)),
    }


def _new_lesion(rng: np.random.Generator, label: str, conspicuity: float) -> dict:
    """A lesion instance: where (side, lung-normalised a, b), how conspicuous, its shape seed."""
    side = int(rng.choice([-1, 1]))
    # a: 0 = medial border .. 1 = lateral border; b: 0 = apex .. 1 = base.
    a, b = float(rng.uniform(0.15, 0.85)), float(rng.uniform(0.15, 0.9))
    kind = ""
    if label == "Effusion" and rng.random() < 0.25:
        side = 0  # bilateral
    elif label in ("Edema", "Emphysema"):
        side = 0
    elif label == "Atelectasis":
        kind = "plate" if rng.random() < 0.6 else str(rng.choice(["rul", "lll", "rll"]))
        b = float(rng.uniform(0.6, 0.9))
    elif label == "Fibrosis":
        side = 0
        kind = "lower" if rng.random() < 0.65 else "upper"
    elif label == "Pleural_Thickening":
        kind = "apical" if rng.random() < 0.4 else "lateral"
    elif label == "Pneumonia":
        kind = "lobar" if rng.random() < 0.5 else "patchy"
    elif label == "Nodule":
        kind = "calcified" if rng.random() < 0.15 else ""
    return {
        "label": label,
        "side": side,
        "a": a,
        "b": b,
        "s": conspicuity,
        "g": 1.0,  # growth factor, drifts across follow-ups
        "kind": kind,
        "count": int(1 + rng.poisson(0.35)) if label == "Nodule" else 1,
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def _conspicuity(rng: np.random.Generator, difficulty: float) -> float:
    """Lesion conspicuity in [0, 1] (0 subtle, 1 obvious); ``difficulty`` shifts the mass down."""
    d = float(np.clip(difficulty, 0.0, 1.0))
    return float(rng.beta(0.6 + 2.0 * (1.0 - d), 0.6 + 2.0 * d))


def plan_dataset(
    *,
    n_patients: int,
    seed: int,
    prevalence: float,
    difficulty: float,
    test_fraction: float,
    followups: float,
) -> list[dict]:
    """The whole dataset as image specs, in image-name order.

    Each spec: ``name, patient_id, follow_up, age, sex, view, width, height, spacing, test,
    findings (sorted labels), anatomy (dict), lesions (list of dicts), seed (list of ints)``.
    The arguments' ranges are those of :class:`imgae_dx.config.SyntheticParams`.
    """
    rng = np.random.default_rng([seed, 1])
    # Patient IDs spread over the real range so images fall in all twelve Kaggle shards.
    pids = np.sort(rng.choice(np.arange(1, nih.N_PATIENTS + 1), size=n_patients, replace=False))
    n_test = max(1, int(round(test_fraction * n_patients))) if n_patients > 1 else 0
    is_test = np.zeros(n_patients, dtype=bool)
    is_test[rng.choice(n_patients, size=n_test, replace=False)] = True
    n_fu = _followup_counts(rng, pids, is_test, followups)
    p_test, p_train = _prevalences(n_fu, is_test, prevalence)
    specs: list[dict] = []
    for i, pid in enumerate(pids):
        p = p_test if is_test[i] else p_train
        specs += _patient_specs(int(pid), int(n_fu[i]), bool(is_test[i]), p, seed, difficulty)
    return specs


def _followup_counts(
    rng: np.random.Generator, pids: np.ndarray, is_test: np.ndarray, followups: float
) -> np.ndarray:
    """Images per patient: test patients have more follow-ups than train patients (as in NIH)."""
    n = len(pids)
    n_fu = np.where(
        is_test, _n_followups(rng, n, followups * 1.15), _n_followups(rng, n, followups * 0.96)
    )
    # 00030805_000.png is the last NIH image: nothing may sort after it (no shard holds it).
    n_fu[pids == nih.N_PATIENTS] = 1
    return n_fu


def _prevalences(n_fu: np.ndarray, is_test: np.ndarray, prevalence: float) -> tuple[float, float]:
    """(test, train) per-patient abnormality rates giving ``prevalence`` over all images, with
    more findings among test patients (as in NIH)."""
    n_img_test = float(n_fu[is_test].sum())
    n_img_train = float(n_fu[~is_test].sum())
    p_test = min(0.85, prevalence + 0.14)
    p_train = (prevalence * (n_img_test + n_img_train) - p_test * n_img_test) / max(n_img_train, 1)
    return p_test, float(np.clip(p_train, 0.02, 0.95))


def _patient_specs(
    pid: int, n_fu: int, test: bool, p_abnormal: float, seed: int, difficulty: float
) -> list[dict]:
    """The image specs of one patient: who they are, then each follow-up's state and view."""
    prng = np.random.default_rng([seed, 2, pid])
    sex = "M" if prng.random() < 0.565 else "F"
    age0 = int(np.clip(round(prng.normal(47.0, 16.5)), 1, 94))
    if prng.random() < 0.04:
        age0 = int(prng.integers(1, 16))
    years_per_fu = prng.uniform(0.0, 0.6)
    anatomy = sample_anatomy(prng, sex, age0)
    # Sickness multiplier: heterogeneous patients; also drives AP (portable) imaging.
    sick = float(prng.gamma(2.5, 1.0 / 2.5))
    pi = float(np.clip(p_abnormal * sick, 0.02, 0.96))
    ap_base = float(
        np.clip(
            0.33 + 0.14 * (sick - 1.0) + (0.1 if test else 0.0) + prng.normal(0, 0.12), 0.02, 0.92
        )
    )
    orig = ORIGINAL_SIZES[int(prng.integers(len(ORIGINAL_SIZES)))]
    abnormal = prng.random() < pi
    lesions: list[dict] = []
    specs = []
    for fu in range(n_fu):
        if fu > 0:
            stay = STATE_RHO + (1 - STATE_RHO) * (pi if abnormal else 1 - pi)
            abnormal = abnormal if prng.random() < stay else not abnormal
        if abnormal:
            lesions = _evolve(prng, lesions, difficulty)
        p_ap = ap_base + (0.03 if abnormal else 0.0)
        specs.append(
            {
                "name": nih.image_name(pid, fu),
                "patient_id": pid,
                "follow_up": fu,
                "age": int(min(age0 + int(fu * years_per_fu), 95)),
                "sex": sex,
                "view": "AP" if prng.random() < p_ap else "PA",
                "width": orig[0],
                "height": orig[1],
                "spacing": orig[2],
                "test": test,
                "findings": sorted({les["label"] for les in lesions}) if abnormal else [],
                "anatomy": anatomy,
                "lesions": [dict(les) for les in lesions] if abnormal else [],
                "seed": [int(seed), 7, pid, fu],
            }
        )
    return specs


def _evolve(prng: np.random.Generator, lesions: list[dict], difficulty: float) -> list[dict]:
    """An abnormal follow-up's lesions: each earlier one kept with its label's probability (its
    size drifting), and a new episode when none is left or at random."""
    kept = []
    for les in lesions:
        if prng.random() < KEEP[les["label"]]:
            les = dict(les)
            les["g"] = float(np.clip(les["g"] * np.exp(prng.normal(0, 0.12)), 0.6, 1.5))
            kept.append(les)
    if not kept or prng.random() < 0.15:
        kept += _episode(prng, difficulty, {les["label"] for les in kept})
    return kept


def _episode(rng: np.random.Generator, difficulty: float, present: set[str]) -> list[dict]:
    """New findings of one episode: 1 + Poisson(0.5) labels drawn from the NIH mix."""
    k = int(min(1 + rng.poisson(0.5), 4))
    labels: list[str] = []
    while len(labels) < k:
        lab = nih.LABELS[int(rng.choice(len(nih.LABELS), p=ONSET_P))]
        if lab not in labels and lab not in present:
            labels.append(lab)
    for given, also, p in CO_OCCUR:
        if given in labels and also not in labels and also not in present and rng.random() < p:
            labels.append(also)
    return [_new_lesion(rng, lab, _conspicuity(rng, difficulty)) for lab in labels]
