"""Training seeds: the params key, per-seed paths, the seed ensemble, the spread over seeds, and
the report they produce (on the fake pipeline of ``tests/test_report.py``)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from imgae_dx import config, paths, report
from imgae_dx.cli import check_training
from imgae_dx.report import seeds
from imgae_dx.report.cells import mean_sd
from imgae_dx.report.inputs import ModelMaps
from tests.test_report import MODELS, _config, _params, make_fake_pipeline


# ---- params and paths ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "seeds: expected a non-empty list of training seeds"),
        ([0, 1, 1], "seeds: duplicate entries [1] in [0, 1, 1]"),
        ([0, -2], "seeds[1]: expected a value >= 0, got -2"),
        ([0.5], "seeds[0]: expected int, got 0.5"),
        ([True], "seeds[0]: expected int, got True"),
        (3, "seeds: expected list, got 3"),
    ],
)
def test_bad_seeds_are_one_line_config_errors(value, message):
    with pytest.raises(config.ConfigError) as err:
        config.validate({**_params(), "seeds": value})
    assert str(err.value).startswith(f"params.yaml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_seeds_default_to_one_and_keep_their_order():
    assert config.validate(_params()).seeds == [0]
    assert config.validate({**_params(), "seeds": [3, 0, 7]}).seeds == [3, 0, 7]


def test_per_seed_paths_are_readable_and_distinct():
    assert paths.model("ae", 2).as_posix() == "models/ae/seed2.pt"
    assert paths.resume_checkpoint("ae", 2).as_posix() == "models/.resume/ae/seed2.pt"
    assert paths.train_curve("ra", 0).as_posix() == "reports/train/ra/seed0.csv"
    assert paths.scores("unet", 1).as_posix() == "reports/scores/unet/seed1.csv"
    assert paths.maps("unet", 1).as_posix() == "reports/maps/unet/seed1.npz"
    assert paths.model("ae", 1) != paths.model("ae", 10)


# ---- aggregation ---------------------------------------------------------------------------------
def _scores(values: list[float], order: list[int]) -> pd.DataFrame:
    images = [f"i{j}" for j in range(len(values))]
    df = pd.DataFrame(
        {"image": images, "split": "test", "label": [0, 1] * (len(values) // 2), "score": values}
    )
    return df.iloc[order].reset_index(drop=True)


def test_ensemble_is_the_per_image_mean_whatever_the_row_order():
    a = _scores([1.0, 2.0, 3.0, 4.0], [0, 1, 2, 3])
    b = _scores([3.0, 6.0, 1.0, 0.0], [3, 1, 0, 2])  # the same images, rows shuffled
    ens = seeds.ensemble_scores({0: a, 1: b}, "ae")
    assert ens["image"].tolist() == a["image"].tolist()
    assert ens["score"].tolist() == [2.0, 4.0, 2.0, 2.0]
    assert seeds.ensemble_scores({5: a}, "ae") is a  # one seed: its own table


def test_ensemble_refuses_seeds_that_scored_other_images():
    a = _scores([1.0, 2.0, 3.0, 4.0], [0, 1, 2, 3])
    b = _scores([1.0, 2.0, 3.0, 4.0], [0, 1, 2])
    with pytest.raises(ValueError, match=r"'ae': seed 1 scored other images.*score@ae-1"):
        seeds.ensemble_scores({0: a, 1: b}, "ae")


def test_ensemble_maps_align_rows_by_image():
    img = np.array(["x", "y"])
    m0 = ModelMaps(img, np.stack([np.zeros((2, 2)), np.ones((2, 2))]).astype(np.float16))
    m1 = ModelMaps(img[::-1], np.stack([np.full((2, 2), 3.0), np.ones((2, 2))]).astype("f2"))
    ens = seeds.ensemble_maps({0: m0, 1: m1}, "ae")
    assert ens.image.tolist() == ["x", "y"] and ens.recon is None
    np.testing.assert_allclose(ens.amap[:, 0, 0], [0.5, 2.0])  # x: (0+1)/2, y: (1+3)/2
    with pytest.raises(ValueError, match="seed 1 holds other images"):
        seeds.ensemble_maps({0: m0, 1: ModelMaps(np.array(["x", "z"]), m1.amap)}, "ae")


def test_mean_sd_uses_the_sample_sd_and_omits_it_for_one_value():
    assert seeds.mean_sd([0.7]) == (0.7, None)
    mean, sd = seeds.mean_sd([0.6, 0.7, None, 0.8])
    assert mean == pytest.approx(0.7) and sd == pytest.approx(0.1)
    assert seeds.mean_sd([None]) == (None, None)
    assert mean_sd(0.7, 0.1, 3) == "0.700 ± 0.100 (n=3)" and mean_sd(0.7, None, 1) == "0.700 (n=1)"


def test_seed_spread_matches_sklearn_per_seed():
    rng = np.random.default_rng(0)
    y = np.array([0] * 30 + [1] * 30)
    tests = {
        k: pd.DataFrame({"image": range(60), "label": y, "score": rng.normal(size=60) + k * y})
        for k in (0, 1, 2)
    }
    sp = seeds.seed_spread(tests, _config(bootstrap=30).report, "image")
    aurocs = [roc_auc_score(y, t["score"]) for t in tests.values()]
    assert [r.seed for r in sp.runs] == [0, 1, 2]
    assert [r.auroc for r in sp.runs] == pytest.approx(aurocs)
    assert [r.auprc for r in sp.runs] == pytest.approx(
        [average_precision_score(y, t["score"]) for t in tests.values()]
    )
    assert sp.auroc_mean == pytest.approx(np.mean(aurocs))
    assert sp.auroc_sd == pytest.approx(np.std(aurocs, ddof=1))
    assert all(r.auroc_ci[0] <= r.auroc <= r.auroc_ci[1] for r in sp.runs)


# ---- the report ----------------------------------------------------------------------------------
def _add_seed(root, seed: int, shift: float) -> None:
    """Seed ``seed``: seed 0's files, test scores moved by ``shift`` x noise."""
    rng = np.random.default_rng(seed)
    for arch in MODELS:
        df = pd.read_csv(root / paths.scores(arch, 0))
        df["score"] += shift * rng.normal(size=len(df))
        df.to_csv(root / paths.scores(arch, seed), index=False)
        shutil.copy(root / paths.maps(arch, 0), root / paths.maps(arch, seed))
        shutil.copy(root / paths.train_curve(arch, 0), root / paths.train_curve(arch, seed))


def test_report_with_two_seeds_gives_mean_sd_and_compares_the_ensembles(tmp_path):
    make_fake_pipeline(tmp_path)
    _add_seed(tmp_path, 1, shift=1.0)
    params = config.validate({**_params(bootstrap=20), "seeds": [0, 1]})
    inputs = report.load_inputs(tmp_path, MODELS, params.seeds)
    m = report.make_report(inputs, params, out_dir=tmp_path / "out")
    per = {}
    for arch in MODELS:
        tests = {k: inputs.seed_scores[arch][k].query("split == 'test'") for k in (0, 1)}
        per[arch] = [roc_auc_score(t["label"], t["score"]) for t in tests.values()]
        merged = tests[0].merge(tests[1], on="image")
        ens = roc_auc_score(merged["label_x"], (merged["score_x"] + merged["score_y"]) / 2)
        assert m["models"][arch]["auroc"] == pytest.approx(ens, abs=1e-5)
        block = m["seeds"]["models"][arch]
        assert block["auroc_mean"] == pytest.approx(np.mean(per[arch]), abs=1e-5)
        assert block["auroc_sd"] == pytest.approx(np.std(per[arch], ddof=1), abs=1e-5)
    assert m["seeds"]["seeds"] == [0, 1]
    assert set(m["training"]["models"]) == {f"{a}/seed{k}" for a in MODELS for k in (0, 1)}
    md = (tmp_path / "out/report.md").read_text()
    assert "### Training seeds" in md and "training seeds 0, 1" in md
    assert "ensemble over seeds 0, 1" in md  # the comparisons say what they compare
    assert json.loads((tmp_path / "out/metrics.json").read_text()) == m
    assert check_training(m, max_over_initial=0.9, max_over_reference=10.0) == []
    del m["training"]["models"]["ae/seed1"]
    assert check_training(m, 0.9, 10.0) == [
        "ae/seed1: no training curve in the metrics (reports/train/ae/seed1.csv)"
    ]


def test_report_with_one_seed_has_no_seed_section(tmp_path):
    make_fake_pipeline(tmp_path)
    m = report.make_report(report.load_inputs(tmp_path, MODELS, [0]), _config(), tmp_path / "o")
    md = (tmp_path / "o/report.md").read_text()
    assert "seeds" not in m and "Training seeds" not in md and "±" not in md
    assert set(m["training"]["models"]) == set(MODELS)
