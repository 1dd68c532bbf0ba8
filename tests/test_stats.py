"""DeLong, bootstrap and Holm (imgae_dx.stats).

DeLong is checked two independent ways:

1. Against published output of another implementation: the values pROC's test suite asserts
   for ``roc.test`` (DeLong, paired) and ``var`` on its aSAH data (pROC, Robin et al. 2011,
   BMC Bioinformatics 12:77; tests/testthat/test-roc.test.R and test-var.R in
   https://github.com/xrobin/pROC). Data: tests/fixtures/asah.csv (see the README there).
2. Against the original structural-components formulation of DeLong, DeLong & Clarke-Pearson
   (1988, Biometrics 44:837), computed here from the explicit ψ(X_i, Y_j) comparison matrix,
   whereas the library uses the midrank algorithm of Sun & Xu (2014).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from imgae_dx import metrics, stats

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def asah() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "asah.csv")


# roc.test(r1, r2) with pROC defaults: (predictor 1, predictor 2, Z, p, CI of AUC1 - AUC2)
PROC_ROC_TEST = [
    ("wfns", "s100b", 2.20898359144091, 0.0271757822291882, 0.0104061769564846, 0.174214419249478),
    ("wfns", "ndka", 2.79777591868904, 0.00514557970691098, 0.0634011709339876, 0.3600405634833566),
    (
        "ndka",
        "s100b",
        -1.39077002573558,
        0.164295175223054,
        -0.2876917446341914,
        0.0488706064228094,
    ),
]
# var(roc) (DeLong) from pROC test-var.R
PROC_VAR = {"wfns": 0.00146991470882363, "ndka": 0.0031908105493913, "s100b": 0.00266868245717244}
PROC_AUC = {"wfns": 0.823678861788618, "ndka": 0.611957994579946}


@pytest.mark.parametrize(("a", "b", "z", "p", "lo", "hi"), PROC_ROC_TEST)
def test_delong_matches_proc_roc_test(asah, a, b, z, p, lo, hi):
    y = (asah["outcome"] == "Poor").astype(int).to_numpy()
    t = stats.delong_test(y, asah[a], asah[b])
    assert t["z"] == pytest.approx(z, rel=1e-10)
    assert t["p"] == pytest.approx(p, rel=1e-9)
    assert t["delta_ci"] == pytest.approx([lo, hi], rel=1e-9)
    assert t["delta"] == pytest.approx(t["auc1"] - t["auc2"])
    swapped = stats.delong_test(y, asah[b], asah[a])
    assert swapped["z"] == pytest.approx(-z, rel=1e-10) and swapped["p"] == pytest.approx(p)


def test_delong_variance_matches_proc_var(asah):
    y = (asah["outcome"] == "Poor").astype(int).to_numpy()
    for name, var in PROC_VAR.items():
        auc, v = stats.delong_auc_variance(y, asah[name])
        assert v == pytest.approx(var, rel=1e-10)
        assert auc == pytest.approx(metrics.auroc(y, asah[name]), abs=1e-14)
    for name, auc in PROC_AUC.items():
        assert stats.delong_auc_variance(y, asah[name])[0] == pytest.approx(auc, rel=1e-12)


def _delong_1988(y: np.ndarray, scores: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and covariance from the explicit ψ matrix (DeLong et al. 1988, eqs. 2-5)."""
    pos, neg = y == 1, y == 0
    m, n = pos.sum(), neg.sum()
    v10, v01, theta = [], [], []
    for s in scores:
        x, z = s[pos][:, None], s[neg][None, :]
        psi = (x > z) + 0.5 * (x == z)  # (m, n)
        theta.append(psi.mean())
        v10.append(psi.mean(axis=1))  # per abnormal: mean over normals
        v01.append(psi.mean(axis=0))  # per normal: mean over abnormals
    theta = np.array(theta)
    v10, v01 = np.array(v10), np.array(v01)
    s10 = (v10 - theta[:, None]) @ (v10 - theta[:, None]).T / (m - 1)
    s01 = (v01 - theta[:, None]) @ (v01 - theta[:, None]).T / (n - 1)
    return theta, s10 / m + s01 / n


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_delong_equals_structural_components(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 80)
    s1 = np.round(rng.normal(0, 1, 80) + y, 1)  # ties within and across classes
    s2 = np.round(0.5 * s1 + rng.normal(0, 1, 80) + 0.3 * y, 1)
    theta, cov = _delong_1988(y, [s1, s2])
    auc, fast_cov = stats.delong_covariance(y, np.vstack([s1, s2]))
    np.testing.assert_allclose(auc, theta, rtol=1e-12)
    np.testing.assert_allclose(fast_cov, cov, rtol=1e-10)
    t = stats.delong_test(y, s1, s2)
    se = np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert t["z"] == pytest.approx((theta[0] - theta[1]) / se, rel=1e-10)
    assert t["p"] == pytest.approx(2 * sps.norm.sf(abs(t["z"])), rel=1e-10)


def test_delong_identical_curves():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.7])
    t = stats.delong_test(y, s, s)
    assert (t["z"], t["p"], t["delta"]) == (0.0, 1.0, 0.0)
    lo, hi = stats.delong_ci(y, s)
    assert 0 <= lo <= metrics.auroc(y, s) <= hi <= 1


def test_bootstrap_same_seed_same_interval():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 120)
    s = rng.normal(0, 1, 120) + y
    a = stats.bootstrap_ci(y, s, n_boot=200, seed=7)
    b = stats.bootstrap_ci(y, s, n_boot=200, seed=7)
    c = stats.bootstrap_ci(y, s, n_boot=200, seed=8)
    assert a == b and a != c
    assert a[0] < metrics.auroc(y, s) < a[1]
    d1 = stats.paired_bootstrap_ci(y, s, -s, n_boot=100, seed=1)
    assert d1 == stats.paired_bootstrap_ci(y, s, -s, n_boot=100, seed=1)
    # same score twice: every paired difference is exactly 0
    assert stats.paired_bootstrap_ci(y, s, s, n_boot=50, seed=1) == (0.0, 0.0)


def test_bootstrap_is_stratified():
    y = np.array([0] * 30 + [1] * 5)
    counts = stats.stratified_bootstrap(
        y, lambda yb, sb: float(yb.sum()), np.arange(35.0), n_boot=50, seed=0
    )
    assert (counts == 5).all()  # class sizes never change: no resample lacks abnormals
    picked = stats.stratified_bootstrap(
        y, lambda yb, sb: float(sb[yb == 1].min()), np.arange(35.0), n_boot=50, seed=0
    )
    assert (picked >= 30).all()  # abnormals are drawn only from abnormals


def test_cluster_bootstrap_keeps_clusters_whole_and_widens_for_duplicates():
    rng = np.random.default_rng(5)
    y = np.r_[np.zeros(80, int), np.ones(60, int)]
    s = rng.normal(0, 1, 140) + 0.8 * y
    # Every image three times over, as if each patient had three identical films.
    y3, s3, pid = np.repeat(y, 3), np.repeat(s, 3), np.repeat(np.arange(140), 3)
    width = lambda ci: ci[1] - ci[0]  # noqa: E731
    naive = stats.bootstrap_ci(y3, s3, n_boot=400, seed=0)
    cluster = stats.bootstrap_ci(y3, s3, n_boot=400, seed=0, clusters=pid)
    truth = stats.bootstrap_ci(y, s, n_boot=400, seed=0)
    # Copies carry no new information: resampling images pretends they do (about sqrt(3)
    # too narrow); resampling patients recovers the interval of the distinct images.
    assert width(naive) < 0.75 * width(cluster)
    assert width(cluster) == pytest.approx(width(truth), rel=0.2)
    assert cluster == stats.bootstrap_ci(y3, s3, n_boot=400, seed=0, clusters=pid)
    # Each replicate holds whole clusters: its size is a multiple of 3, and every drawn
    # patient's three copies come together.
    sizes = stats.stratified_bootstrap(
        y3, lambda yb, pb: float(len(pb)), pid, n_boot=30, seed=1, clusters=pid
    )
    assert (sizes % 3 == 0).all()
    whole = stats.stratified_bootstrap(
        y3,
        lambda yb, pb: float(all(c % 3 == 0 for c in np.unique(pb, return_counts=True)[1])),
        pid,
        n_boot=30,
        seed=1,
        clusters=pid,
    )
    assert whole.all()
    d = stats.paired_bootstrap_ci(y3, s3, -s3, n_boot=50, seed=2, clusters=pid)
    assert d[0] <= d[1]
    with pytest.raises(ValueError, match="clusters"):
        stats.bootstrap_ci(y3, s3, clusters=pid[:-1])


def test_cluster_bootstrap_replicate_without_normals_is_nan():
    # Every patient has an abnormal film: a replicate can miss the normals entirely.
    y = np.array([0, 1, 1, 0, 1, 1])
    pid = np.array([0, 0, 0, 1, 1, 1])
    vals = stats.stratified_bootstrap(
        y, lambda yb, sb: float(yb.mean()), np.zeros(6), n_boot=40, seed=0, clusters=pid
    )
    assert np.isfinite(vals).all()  # both clusters hold both classes: never missing
    y2 = np.array([1, 1, 0, 1])
    vals = stats.stratified_bootstrap(
        y2, lambda yb, sb: float(yb.mean()), np.zeros(4), n_boot=40, seed=0, clusters=[0, 0, 1, 1]
    )
    assert np.isnan(vals).any() and np.isfinite(vals).any()


def test_holm():
    # hand-computed: sorted p 0.01, 0.02, 0.04 -> 0.03, 0.04, 0.04 (monotone), back in input order
    assert stats.holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert stats.holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.01, None, float("nan")]) == [pytest.approx(0.01), None, None]
    assert stats.holm([]) == []


# -- clustered DeLong (Obuchowski 1997) -----------------------------------------------------------
def _obuchowski_by_hand(y, s1, s2, g):
    """Obuchowski (1997) eqs. for Cov(AUC1, AUC2) from the explicit ψ comparisons, with loops."""
    y, g = np.asarray(y), np.asarray(g)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    big_m, big_n = len(pos), len(neg)

    def psi(a, b):
        return 1.0 if a > b else 0.5 if a == b else 0.0

    parts = []
    for s in (s1, s2):
        auc = sum(psi(s[i], s[j]) for i in pos for j in neg) / (big_m * big_n)
        v10, v01, m_i, n_i = {}, {}, {}, {}
        for c in np.unique(g):
            ab = [i for i in pos if g[i] == c]
            no = [j for j in neg if g[j] == c]
            m_i[c], n_i[c] = len(ab), len(no)
            v10[c] = sum(sum(psi(s[i], s[j]) for j in neg) / big_n for i in ab)
            v01[c] = sum(sum(psi(s[i], s[j]) for i in pos) / big_m for j in no)
        parts.append((auc, v10, v01, m_i, n_i))
    (a1, p10, p01, m_i, n_i), (a2, q10, q01, _, _) = parts
    cl = list(m_i)
    i_all = len(cl)
    i10 = sum(1 for c in cl if m_i[c] > 0)
    i01 = sum(1 for c in cl if n_i[c] > 0)
    s10 = (
        i10 / ((i10 - 1) * big_m) * sum((p10[c] - m_i[c] * a1) * (q10[c] - m_i[c] * a2) for c in cl)
    )
    s01 = (
        i01 / ((i01 - 1) * big_n) * sum((p01[c] - n_i[c] * a1) * (q01[c] - n_i[c] * a2) for c in cl)
    )
    s11 = i_all / (i_all - 1) * sum((p10[c] - m_i[c] * a1) * (q01[c] - n_i[c] * a2) for c in cl)
    s11t = i_all / (i_all - 1) * sum((q10[c] - m_i[c] * a2) * (p01[c] - n_i[c] * a1) for c in cl)
    return s10 / big_m + s01 / big_n + (s11 + s11t) / (big_m * big_n)


def test_clustered_delong_matches_the_formula_by_hand():
    rng = np.random.default_rng(11)
    g = np.repeat(np.arange(14), rng.integers(1, 4, 14))  # 1-3 films per patient
    y = (rng.random(len(g)) < 0.4).astype(int)  # patients mix normal and abnormal films
    y[:2] = [0, 1]
    s1 = np.round(rng.normal(size=len(g)) + y, 1)  # rounded: ties
    s2 = np.round(rng.normal(size=len(g)) + 0.5 * y, 1)
    auc, cov = stats.delong_covariance(y, np.vstack([s1, s2]), clusters=g)
    assert auc == pytest.approx([metrics.auroc(y, s1), metrics.auroc(y, s2)], abs=1e-12)
    assert cov[0, 1] == pytest.approx(_obuchowski_by_hand(y, s1, s2, g), abs=1e-12)
    assert cov[0, 0] == pytest.approx(_obuchowski_by_hand(y, s1, s1, g), abs=1e-12)
    assert cov[1, 1] == pytest.approx(_obuchowski_by_hand(y, s2, s2, g), abs=1e-12)
    assert cov[0, 1] == pytest.approx(cov[1, 0], abs=1e-15)
    with pytest.raises(ValueError, match="clusters"):
        stats.delong_covariance(y, s1, clusters=g[:-1])


def test_clustered_delong_reduces_to_delong():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(50, int), np.ones(40, int)]
    s = rng.normal(size=(3, 90)) + y
    auc, plain = stats.delong_covariance(y, s)
    auc_c, one_per_patient = stats.delong_covariance(y, s, clusters=np.arange(90)[::-1])
    np.testing.assert_allclose(one_per_patient, plain, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(auc, auc_c)
    # Three identical films per patient carry no more information than one: the clustered
    # variance of the tripled data is exactly DeLong's of the distinct images.
    y3, s3, pid = np.repeat(y, 3), np.repeat(s, 3, axis=1), np.repeat(np.arange(90), 3)
    _, tripled = stats.delong_covariance(y3, s3, clusters=pid)
    np.testing.assert_allclose(tripled, plain, rtol=1e-10)
    _, naive = stats.delong_covariance(y3, s3)
    assert (np.diag(naive) < 0.4 * np.diag(plain)).all()  # image-level: about a third


@pytest.mark.parametrize(
    ("labels", "groups", "counts"),
    [
        # every abnormal film from one patient: its class variance does not exist (was 0)
        ([0, 0, 1, 1, 0, 1, 0, 0], [1, 2, 3, 3, 4, 3, 5, 6], "got 1 and 5"),
        # one patient holds everything: was NaN with only a RuntimeWarning
        ([0, 1, 0, 1, 1, 0], [7] * 6, "got 1 and 1"),
    ],
)
def test_clustered_delong_refuses_a_class_in_one_cluster(labels, groups, counts):
    y, g = np.array(labels), np.array(groups)
    s = np.linspace(0.0, 1.0, len(y))
    for call in (
        lambda: stats.delong_covariance(y, s, clusters=g),
        lambda: stats.delong_ci(y, s, clusters=g),
        lambda: stats.delong_test(y, s, s[::-1], clusters=g),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # an error, not a warning and a NaN
            with pytest.raises(stats.DegenerateDeLongError, match=f"2 clusters.*{counts}"):
                call()
    # two clusters per class is enough, and gives a positive variance
    g2 = g.copy()
    g2[np.flatnonzero(y == 1)[0]] = 99
    g2[np.flatnonzero(y == 0)[0]] = 98
    assert stats.delong_auc_variance(y, s, clusters=g2)[1] > 0


def test_plain_delong_refuses_a_single_image_of_a_class():
    y, s = np.array([0, 0, 0, 1]), np.array([0.1, 0.4, 0.3, 0.9])
    with pytest.raises(stats.DegenerateDeLongError, match="2 images.*got 1 and 3"):
        stats.delong_ci(y, s)
    assert stats.delong_auc_variance(np.r_[y, 1], np.r_[s, 0.2])[1] > 0


def _clustered_draw(rng, n_pat):
    """Patients with 1-4 films, some with both labels; two scores with the same true AUROC,
    each with its own patient effect (films of one patient are correlated)."""
    k = rng.integers(1, 5, n_pat)
    pid = np.repeat(np.arange(n_pat), k)
    sick = (rng.random(n_pat) < 0.35)[pid]
    y = (sick & (rng.random(len(pid)) < 0.7)).astype(int)
    base = 0.8 * y + 0.5 * rng.normal(size=len(pid))
    a = base + rng.normal(size=n_pat)[pid] + 0.3 * rng.normal(size=len(pid))
    b = base + rng.normal(size=n_pat)[pid] + 0.3 * rng.normal(size=len(pid))
    return y, a, b, pid


def test_clustered_delong_has_nominal_coverage_and_size():
    true_auc = metrics.auroc(*_clustered_draw(np.random.default_rng(123), 40_000)[:2])
    rng = np.random.default_rng(0)
    reps = 400
    cover = {"patient": 0, "image": 0}
    reject = {"patient": 0, "image": 0}
    for _ in range(reps):
        y, a, b, pid = _clustered_draw(rng, 150)
        for unit, g in (("patient", pid), ("image", None)):
            lo, hi = stats.delong_ci(y, a, 0.95, clusters=g)
            cover[unit] += lo <= true_auc <= hi
            # a and b have the same true AUROC: a 5 % test should reject 5 % of the time
            reject[unit] += stats.delong_test(y, a, b, clusters=g)["p"] < 0.05
    # Monte Carlo standard error at 400 replicates: about 0.011 for both rates; with 150
    # patients the normal approximation itself is a little liberal (seeds 0-3: coverage
    # 0.925-0.955, size 0.06-0.085).
    assert 0.90 <= cover["patient"] / reps <= 0.98
    assert 0.02 <= reject["patient"] / reps <= 0.10
    # Treating films as independent is overconfident on these data.
    assert cover["image"] / reps < 0.88 and reject["image"] / reps > 0.12
