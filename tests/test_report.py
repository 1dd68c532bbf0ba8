"""End to end: make_report on a tiny fake pipeline output (2 models, 60 test images at 16²)."""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from imgae_dx import config, report
from imgae_dx.cli import compare_metrics
from imgae_dx.data.issues import ISSUE_COLUMNS, Issue, issues_frame
from imgae_dx.io import write_npz
from imgae_dx.report import caveats, results

S = 16
MODELS = ["ae", "unet"]
FINDINGS = ["Effusion", "Mass", "Nodule", "Effusion|Mass", "Infiltration"]
REPO = Path(__file__).resolve().parents[1]


def _params(**report_overrides) -> dict:
    """A complete params.yaml as a dict (every required key), with ``report`` overrides."""
    rep = {
        "bootstrap": 40,
        "seed": 0,
        "ci": 0.95,
        "threshold_percentile": 95,
        "age_bands": [0, 30, 45, 60, 75, 200],
        "min_stratum": 5,
        "gallery_n": 1,
    }
    rep.update(report_overrides)
    return {
        "seed": 0,
        "models": MODELS,
        "data": {
            "source": "synthetic",
            "shards": "all",
            "views": ["PA", "AP"],
            "image_size": S,
            "val_fraction": 0.1,
            "test_fraction": 0.2,
        },
        "score": {"reduce": "mean"},
        "train": {"epochs": 2},
        "arch": {"ae": {"latent_dim": 16}, "unet": {"base_channels": 8}, "vae": {"latent_dim": 4}},
        "report": rep,
        "mlflow": {"enabled": False},
    }


def _config(**report_overrides) -> config.Params:
    return config.validate(_params(**report_overrides))


def make_fake_pipeline(root: Path, seed: int = 0) -> None:
    """The files the report stage reads, with small, fixed, partly informative data."""
    rng = np.random.default_rng(seed)
    n_test, n_val = 60, 30
    label = np.array([0] * 34 + [1] * 26)
    rows = []
    for i in range(n_test):
        ab = label[i] == 1
        rows.append(
            {
                "image": f"{i:08d}_000.png",
                "patient_id": f"{i // 2:08d}",
                "follow_up": i % 2,
                "age": int(rng.integers(5, 90)),
                "sex": "M" if i % 3 else "F",
                "view": "AP" if (rng.random() < (0.6 if ab else 0.4)) else "PA",
                "findings": FINDINGS[i % len(FINDINGS)] if ab else "No Finding",
                "label": int(ab),
            }
        )
    test = pd.DataFrame(rows)
    images = rng.integers(0, 200, (n_test, S, S)).astype(np.uint8)
    images[label == 1, 4:8, 4:8] = 255  # a bright "lesion"
    (root / "data/split").mkdir(parents=True)
    (root / "data/prepared").mkdir(parents=True)
    test.to_csv(root / "data/prepared/test.csv", index=False)
    np.save(root / "data/prepared/test.npy", images)
    for rel in ("data/split/issues.csv", "data/prepared/issues.csv"):  # no data issues
        issues_frame([]).to_csv(root / rel, index=False)
    boxed = test.index[(test["label"] == 1) & (test.index % 2 == 0)]
    boxes = pd.DataFrame(
        {
            "image": test.loc[boxed, "image"],
            "finding": [test.loc[i, "findings"].split("|")[0] for i in boxed],
            "x": 4.0,
            "y": 4.0,
            "w": 4.0,
            "h": 4.0,
        }
    )
    boxes.to_csv(root / "data/prepared/boxes.csv", index=False)
    (root / "data/split/summary.json").write_text(
        json.dumps(
            {
                "source": "synthetic",
                "n_train": 200,
                "n_val": n_val,
                "n_test_normal": 34,
                "n_test_abnormal": 26,
                "by_view": {
                    "PA": {"normal": 100, "abnormal": 20},
                    "AP": {"normal": 90, "abnormal": 30},
                },
                "by_finding": {"Effusion": 12, "Mass": 9},
            }
        )
    )
    (root / "reports/figures").mkdir(parents=True)
    for k, arch in enumerate(MODELS):
        strength = 1.0 + k
        score_t = rng.normal(0, 1, n_test) + strength * label
        val = pd.DataFrame(
            {
                "image": [f"v{i:07d}_000.png" for i in range(n_val)],
                "patient_id": [f"v{i}" for i in range(n_val)],
                "split": "val",
                "view": "PA",
                "sex": "M",
                "age": 40,
                "label": 0,
                "findings": "No Finding",
                "score": rng.normal(0, 1, n_val),
            }
        )
        tst = test.drop(columns=["follow_up"]).assign(split="test", score=score_t)
        sc = pd.concat([val, tst[val.columns]], ignore_index=True)
        # rows in a different order per model: the report must align them by image
        sc = sc.sample(frac=1.0, random_state=k)
        (root / f"reports/scores/{arch}").mkdir(parents=True, exist_ok=True)
        sc.to_csv(root / f"reports/scores/{arch}/seed0.csv", index=False)
        recon = np.clip(images / 255.0 + rng.normal(0, 0.05, images.shape), 0, 1)
        amap = np.abs(images / 255.0 - recon)
        amap[label == 1, 4:8, 4:8] += 0.5 * k
        write_npz(
            root / f"reports/maps/{arch}/seed0.npz",
            image=test["image"].to_numpy().astype(str),
            recon=recon.astype(np.float16),
            map=amap.astype(np.float16),
            meta_json=np.array(
                json.dumps({"map": "ra", "saliency": "ssim", "reduce": "mean", "smooth_sigma": 0})
            ),
        )
        (root / f"reports/train/{arch}").mkdir(parents=True, exist_ok=True)
        # ae trains well below the mean-image reference (~0.05); unet never gets there.
        val_loss = [0.30, 0.02, 0.01, 0.012] if arch == "ae" else [0.40, 0.32, 0.25, 0.26]
        pd.DataFrame(
            {
                "epoch": [0, 1, 2, 3],
                "train_loss": [None, 0.3, 0.2, 0.15],
                "val_loss": val_loss,
                "lr": [None, 1e-3, 1e-3, 1e-3],
            }
        ).to_csv(root / f"reports/train/{arch}/seed0.csv", index=False)
    np.save(root / "data/prepared/train.npy", rng.integers(0, 200, (50, S, S)).astype(np.uint8))
    np.save(root / "data/prepared/val.npy", rng.integers(0, 200, (n_val, S, S)).astype(np.uint8))


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("pipeline")
    make_fake_pipeline(root)
    inputs = report.load_inputs(root, MODELS)
    result = report.make_report(inputs, _config(), out_dir=root / "reports")
    return root, result


def test_outputs_exist(built):
    root, _ = built
    for rel in [
        "metrics.json",
        "report.md",
        "plots/roc/ae.csv",
        "plots/roc/unet.csv",
        "plots/pr/ae.csv",
        "plots/pr/unet.csv",
        "figures/roc.png",
        "figures/pr.png",
        "figures/score_dist.png",
        "figures/gallery.png",
        "figures/train_curves.png",
    ]:
        assert (root / "reports" / rel).is_file(), rel
    roc = pd.read_csv(root / "reports/plots/roc/ae.csv")
    assert list(roc.columns) == ["fpr", "tpr"] and roc.iloc[0].tolist() == [0, 0]
    assert list(pd.read_csv(root / "reports/plots/pr/ae.csv").columns) == ["recall", "precision"]


def test_metrics_json_contract(built):
    root, result = built
    text = (root / "reports/metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    m = json.loads(text)
    assert m == result
    assert m["data"] == {
        "source": "synthetic",
        "n_train": 50,  # the prepared array's images, not summary.json's 200
        "n_val": 30,
        "n_test_normal": 34,
        "n_test_abnormal": 26,
        "n_test_patients": 30,
        "n_repaired": 0,
        "n_excluded": 0,
    }
    assert m["bootstrap"] == {"unit": "patient", "resamples": 40, "seed": 0}
    for arch in MODELS:
        a = m["models"][arch]
        assert isinstance(a["auroc"], float) and 0 <= a["auroc"] <= 1
        lo, hi = a["auroc_ci95"]
        assert lo <= a["auroc"] <= hi
        for key in ("auprc", "auprc_ci95", "f1_max", "sens_at_95spec", "spec_at_95sens"):
            assert a[key] is not None, key
        assert a["threshold"]["source"] == "val normals" and a["threshold"]["n_val_normal"] == 30
        assert {"sensitivity", "specificity", "f1", "value"} <= set(a["threshold"])
        assert a["score_method"] == {
            "map": "ra",
            "saliency": "ssim",
            "reduce": "mean",
            "smooth_sigma": 0,
        }
        assert set(a["by_view"]) == {"PA", "AP"} and set(a["by_sex"]) == {"M", "F"}
        assert list(a["by_age"]) == ["0-30", "30-45", "45-60", "60-75", "75+"]
        assert set(a["by_finding"]) == {"Effusion", "Mass", "Nodule", "Infiltration"}
        assert a["by_finding"]["Effusion"]["n_abnormal"] == 10  # "Effusion" and "Effusion|Mass"
        assert a["by_finding"]["Effusion"]["n_normal"] == 34
        for strata in ("by_view", "by_sex", "by_age", "by_finding"):
            for v in a[strata].values():
                small = min(v["n_normal"], v["n_abnormal"]) < 5
                assert (v["auroc"] is None) == small and (v["auroc_ci95"] is None) == small
        loc = a["localization"]
        assert (
            loc["n_images"] == 13 and 0 <= loc["hit_rate"] <= 1 and loc["pixel_auroc"] is not None
        )
    # unet's maps light up the lesion box: every boxed image is a hit
    assert m["models"]["unet"]["localization"]["hit_rate"] == 1.0
    assert set(m["baselines"]) == {"mean_intensity", "std_intensity", "view_ap"}
    assert m["baselines"]["mean_intensity"]["auroc"] > 0.9  # the fake lesion brightens abnormals
    c = m["comparisons"]["ae_vs_unet"]
    assert c["delta_auroc"] == pytest.approx(
        m["models"]["ae"]["auroc"] - m["models"]["unet"]["auroc"], abs=2e-6
    )
    assert 0 <= c["p_delong"] <= c["p_holm"] <= 1 and len(c["delta_auroc_ci95"]) == 2


@pytest.fixture(scope="module")
def analysis(built) -> results.Analysis:
    root, _ = built
    return report.analyze(report.load_inputs(root, MODELS), _config())


def test_typed_results_are_what_metrics_json_says(built, analysis):
    _, result = built
    assert report.to_metrics(analysis) == result
    ae, m = analysis.models["ae"], result["models"]["ae"]
    assert isinstance(ae, results.ModelResult) and analysis.unit == "patient"
    assert (ae.auroc, list(ae.auroc_ci)) == (m["auroc"], m["auroc_ci95"])
    assert ae.threshold.value == m["threshold"]["value"] and ae.threshold.n_val_normal == 30
    assert list(ae.strata.age) == ["0-30", "30-45", "45-60", "60-75", "75+"]
    assert ae.strata.finding["Effusion"].n_abnormal == 10
    assert ae.localization.n_images == 13
    (c,) = analysis.comparisons
    assert (c.a, c.b, c.n) == ("ae", "unet", 60)
    assert c.delta_auroc == result["comparisons"]["ae_vs_unet"]["delta_auroc"]
    assert c.p_delong <= c.p_holm
    assert analysis.training.models["unet"].best_over_reference >= 1
    # every number is rounded once, as metrics.json stores it, so report.md prints the same
    for x in (ae.auroc, *ae.auroc_ci, ae.threshold.value, c.p_delong, c.delong.z):
        assert x == float(f"{x:.6g}")


def test_metrics_json_key_order(built):
    _, m = built
    assert list(m) == [
        "data",
        "models",
        "baselines",
        "comparisons",
        "bootstrap",
        "delong",
        "training",
    ]
    ae = m["models"]["ae"]
    assert list(ae) == [
        "auroc",
        "auroc_ci95",
        "auroc_ci95_delong",
        "auprc",
        "auprc_ci95",
        "f1_max",
        "sens_at_95spec",
        "spec_at_95sens",
        "n_normal",
        "n_abnormal",
        "threshold",
        "score_method",
        "by_view",
        "by_sex",
        "by_age",
        "by_finding",
        "localization",
    ]
    assert list(ae["threshold"]) == [
        "source",
        "percentile",
        "value",
        "n_val_normal",
        "val_flagged",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "tp",
        "fp",
        "tn",
        "fn",
    ]
    assert list(ae["by_view"]["PA"]) == [
        "auroc",
        "auroc_ci95",
        "n_normal",
        "n_abnormal",
        "sensitivity",
        "specificity",
    ]
    assert list(ae["localization"]) == [
        "hit_rate",
        "chance_hit_rate",
        "pixel_auroc",
        "n_images",
        "n_boxes",
        "by_finding",
    ]
    assert list(m["baselines"]["view_ap"]) == ["auroc", "auroc_ci95", "n_normal", "n_abnormal"]
    assert list(m["comparisons"]["ae_vs_unet"]) == [
        "delta_auroc",
        "delta_auroc_ci95",
        "delta_auroc_ci95_delong",
        "z_delong",
        "p_delong",
        "p_holm",
        "n",
    ]
    assert list(m["training"]["models"]["ae"]) == [
        "epochs_run",
        "best_epoch",
        "initial_val_loss",
        "best_val_loss",
        "best_over_initial",
        "best_over_reference",
    ]


def test_metrics_keys_follow_the_report_levels(analysis):
    levels = _config(ci=0.9, target_specificity=0.8).report
    m = report.to_metrics(dataclasses.replace(analysis, params=levels))
    ae = m["models"]["ae"]
    assert {"auroc_ci90", "auroc_ci90_delong", "auprc_ci90", "sens_at_80spec"} <= set(ae)
    assert "spec_at_95sens" in ae and "auroc_ci95" not in ae
    assert (
        "auroc_ci90" in ae["by_view"]["PA"] and "delta_auroc_ci90" in m["comparisons"]["ae_vs_unet"]
    )


def test_each_caveat_applies_on_its_own(analysis):
    kaggle = dataclasses.replace(analysis, data=dataclasses.replace(analysis.data, source="kaggle"))
    assert caveats.synthetic_data(analysis) and caveats.synthetic_data(kaggle) is None
    assert caveats.caveats(kaggle) == [
        c for c in caveats.caveats(analysis) if c != caveats.synthetic_data(analysis)
    ]
    assert "unet (" in caveats.under_trained(analysis)
    assert "ae (" not in caveats.under_trained(analysis)
    assert "cluster bootstrap" in caveats.clustered_images(analysis)
    by_image = dataclasses.replace(analysis, unit="image")
    assert "`report.unit: image`" in caveats.clustered_images(by_image)
    assert "film by film" in caveats.intervals_and_multiplicity(by_image)
    assert "ae: ssim, unet: ssim" in caveats.ra_saliency(analysis)
    # the fixture's maps predate score.ra_map: the project's variant, posterior mean
    assert "ae: `project` map" in caveats.ra_map_variant(analysis)
    published = {"map": "ra", "ra_map": "published", "latent": "sample", "latent_seed": 3}
    one = dataclasses.replace(analysis.models["ae"], score_method=published)
    only = dataclasses.replace(analysis, models={"ae": one})
    assert "ae: `published` map, sampled-latent reconstruction (seed 3)" in (
        caveats.ra_map_variant(only)
    )


def test_training_block_and_undertrained_caveat(built):
    root, result = built
    tr = result["training"]
    train = np.load(root / "data/prepared/train.npy").astype(np.float64) / 255
    val = np.load(root / "data/prepared/val.npy").astype(np.float64) / 255
    assert tr["reference_val_mse"] == pytest.approx(((val - train.mean(0)) ** 2).mean(), rel=1e-5)
    ae, unet = tr["models"]["ae"], tr["models"]["unet"]
    assert (ae["epochs_run"], ae["best_epoch"], ae["initial_val_loss"]) == (3, 2, 0.3)
    assert ae["best_over_initial"] == pytest.approx(0.01 / 0.3, rel=1e-5)
    assert ae["best_over_reference"] < 1 <= unet["best_over_reference"]
    md = (root / "reports/report.md").read_text()
    assert "selected / mean image" in md
    caveat = next(line for line in md.splitlines() if "**Under-trained models.**" in line)
    assert "unet (0.25" in caveat and "ae (" not in caveat

    from imgae_dx.cli import check_training

    problems = check_training(result, max_over_initial=0.5, max_over_reference=1.0)
    assert len(problems) == 2 and all(p.startswith("unet:") for p in problems)
    assert check_training(result, max_over_initial=0.9, max_over_reference=10.0) == []
    partial = copy.deepcopy(result)
    del partial["training"]["models"]["ae"]
    assert check_training(partial, 0.9, 10.0) == [
        "ae: no training curve in the metrics (reports/train/ae/seed<k>.csv)"
    ]


def test_unit_image_treats_films_as_independent(tmp_path):
    root = tmp_path / "p"
    make_fake_pipeline(root)
    inputs = report.load_inputs(root, MODELS)
    by_image = report.to_metrics(report.analyze(inputs, _config(unit="image")))
    by_patient = report.to_metrics(report.analyze(inputs, _config()))
    assert by_image["bootstrap"]["unit"] == by_image["delong"]["unit"] == "image"
    assert by_patient["bootstrap"]["unit"] == by_patient["delong"]["unit"] == "patient"
    ae_i, ae_p = by_image["models"]["ae"], by_patient["models"]["ae"]
    assert ae_i["auroc"] == ae_p["auroc"]
    assert ae_i["auroc_ci95"] != ae_p["auroc_ci95"]
    assert ae_i["auroc_ci95_delong"] != ae_p["auroc_ci95_delong"]
    ci_i, ci_p = (by["comparisons"]["ae_vs_unet"] for by in (by_image, by_patient))
    assert ci_i["delta_auroc"] == ci_p["delta_auroc"] and ci_i["p_delong"] != ci_p["p_delong"]
    with pytest.raises(config.ConfigError, match="report.unit"):
        _config(unit="visit")


def test_mean_image_reference_is_chunk_independent():
    rng = np.random.default_rng(3)
    train = rng.integers(0, 256, (37, 8, 8)).astype(np.uint8)
    val = rng.integers(0, 256, (11, 8, 8)).astype(np.uint8)
    whole = report.mean_image_val_mse(train, val)
    assert report.mean_image_val_mse(train, val, chunk=5) == pytest.approx(whole, rel=1e-12)
    assert report.mean_image_val_mse(train, train[:1].repeat(3, 0)) > 0
    with pytest.raises(ValueError, match="empty"):
        report.mean_image_val_mse(train[:0], val)


def test_report_markdown_has_every_section(built):
    root, _ = built
    md = (root / "reports/report.md").read_text()
    for heading in [
        "## 1. Setup",
        "### Data",
        "### Data issues",
        "### Test set by view",
        "### Test abnormal images by finding",
        "### Scoring",
        "### Parameters",
        "## 2. Image-level detection",
        "## 3. Operating point",
        "### 4.1 By view",
        "### 4.2 By sex",
        "### 4.3 By age band",
        "### 4.4 By finding",
        "## 5. Architecture comparisons",
        "## 6. Localization",
        "## 7. Score distributions",
        "## 8. Training curves",
        "## 9. Caveats",
    ]:
        assert heading in md, heading
    for fig in ["roc", "pr", "score_dist", "gallery", "train_curves"]:
        assert f"(figures/{fig}.png)" in md
    assert "ae − unet" in md and "_baseline: view (AP)_" in md
    assert (
        "Synthetic data is not clinical evidence" in md and "NLP" in md and "View confounder" in md
    )
    assert "`arch.vae" not in md  # only the reported models' parameters
    assert "not available" not in md  # every table is filled on a complete run
    assert "nan" not in md.lower().replace("nonan", "")


def test_no_data_issue_is_one_line_and_an_empty_table(built):
    root, result = built
    md = (root / "reports/report.md").read_text()
    section = md.split("### Data issues\n\n")[1].split("\n\n")[0]
    assert section.startswith("None: every metadata row and image was used as it is")
    assert "\n" not in section and "Excluded data" not in md
    assert (root / "reports/data_issues.csv").read_text() == ",".join(ISSUE_COLUMNS) + "\n"


def test_data_issues_are_counted_listed_and_compared(tmp_path):
    make_fake_pipeline(tmp_path, seed=3)
    row7 = "data/raw/Data_Entry_2017.csv: line 7 (00000099_000.png): Patient Age 'x': not an age"
    split_issue = Issue(
        "split", "", "00000099_000.png", 7, "excluded", "malformed row: Patient Age", row7
    )
    jpeg = "data/raw/images_001/images/00000001_000.png: "
    prepared = [
        ("test", "00000001_000.png", "repaired", "not a PNG", jpeg + "not a PNG: JPEG data"),
        ("test", "00000001_000.png", "repaired", "not 8-bit grayscale", jpeg + "mode RGB"),
        ("train", "00000200_000.png", "repaired", "16-bit", "x.png: 16-bit, scaled"),
        ("val", "00000300_000.png", "excluded", "undecodable", "y.png: cannot decode: truncated"),
        ("test", "00000400_000.png", "excluded", "missing file", "z.png: missing file"),
    ]
    prepared = [Issue("prepare", sp, im, None, a, p, r) for sp, im, a, p, r in prepared]
    issues_frame([split_issue]).to_csv(tmp_path / "data/split/issues.csv", index=False)
    issues_frame(prepared).to_csv(tmp_path / "data/prepared/issues.csv", index=False)
    inputs = report.load_inputs(tmp_path, MODELS)
    m = report.make_report(inputs, _config(bootstrap=10), out_dir=tmp_path / "reports")
    assert (m["data"]["n_repaired"], m["data"]["n_excluded"]) == (2, 3)  # two images repaired
    listed = pd.read_csv(tmp_path / "reports/data_issues.csv", keep_default_na=False)
    assert listed["image"].tolist() == [split_issue.image] + [i.image for i in prepared]
    assert listed["line"].tolist() == ["7", "", "", "", "", ""]
    assert listed["reason"].tolist()[:2] == [split_issue.reason, prepared[0].reason]
    md = (tmp_path / "reports/report.md").read_text()
    assert "2 image(s) repaired, 3 metadata row(s) or image(s) excluded" in md
    for row in [
        "| split | — | excluded | malformed row: Patient Age | 1 |",
        "| prepare | test | repaired | not a PNG | 1 |",
        "| prepare | test | repaired | not 8-bit grayscale | 1 |",
        "| prepare | train | repaired | 16-bit | 1 |",
        "| prepare | val | excluded | undecodable | 1 |",
    ]:
        assert row in md, row
    assert "**Excluded data.** 3 metadata row(s) or image(s)" in md
    # imgae-dx check-metrics compares every data.* key of the committed file
    before = json.loads((tmp_path / "reports/metrics.json").read_text())
    clean = copy.deepcopy(before)
    clean["data"].update(n_repaired=0, n_excluded=0)
    assert compare_metrics(before, before, 0.0) == []
    assert compare_metrics(clean, before, 0.0) == [
        "data.n_repaired: committed 0, reproduced 2",
        "data.n_excluded: committed 0, reproduced 3",
    ]
    older = copy.deepcopy(before)  # a metrics.json from before these keys existed
    del older["data"]["n_repaired"], older["data"]["n_excluded"]
    assert compare_metrics(older, before, 0.0) == []


def test_deterministic_outputs(built, tmp_path):
    root, _ = built
    again = tmp_path / "again"
    report.make_report(report.load_inputs(root, MODELS), _config(), out_dir=again)
    for rel in [
        "metrics.json",
        "report.md",
        "plots/roc/ae.csv",
        "figures/roc.png",
        "figures/gallery.png",
    ]:
        assert (again / rel).read_bytes() == (root / "reports" / rel).read_bytes(), rel


def test_test_labels_never_move_the_threshold(built):
    root, result = built
    inputs = report.load_inputs(root, MODELS)
    for df in inputs.scores.values():
        test = df["split"] == "test"
        df.loc[test, "label"] = 1 - df.loc[test, "label"]  # flip every test label
    flipped = report.to_metrics(report.analyze(inputs, _config()))
    for arch in MODELS:
        assert (
            flipped["models"][arch]["threshold"]["value"]
            == result["models"][arch]["threshold"]["value"]
        )


def test_headline_metrics_are_scalars(built):
    _, result = built
    head = report.headline_metrics(result)
    assert head["models"]["ae"]["auroc"] == result["models"]["ae"]["auroc"]
    assert "by_view" not in head["models"]["ae"] and "auroc_ci95" not in head["models"]["ae"]
    assert (
        head["comparisons"]["ae_vs_unet"]["p_holm"] == result["comparisons"]["ae_vs_unet"]["p_holm"]
    )


def test_config_errors_name_the_key():
    with pytest.raises(config.ConfigError, match="report.bootstrapp"):
        _config(bootstrapp=10)
    with pytest.raises(config.ConfigError, match="report.ci"):
        _config(ci=1.5)
    with pytest.raises(config.ConfigError, match="report.age_bands"):
        _config(age_bands=[30, 10])
    assert report.age_band_labels([0, 30, 200]) == ["0-30", "30+"]


def test_missing_optional_inputs_degrade_gracefully(tmp_path):
    make_fake_pipeline(tmp_path, seed=1)
    for rel in [
        "data/prepared/test.npy",
        "data/prepared/boxes.csv",
        "reports/train/ae/seed0.csv",
        "reports/maps/unet/seed0.npz",
    ]:
        (tmp_path / rel).unlink()
    m = report.make_report(
        report.load_inputs(tmp_path, MODELS), _config(bootstrap=10), tmp_path / "out"
    )
    assert (
        m["baselines"]["mean_intensity"]["auroc"] is None
        and m["baselines"]["view_ap"]["auroc"] is not None
    )
    assert (
        m["models"]["ae"]["localization"]["n_images"] == 0
        and m["models"]["unet"]["score_method"] == {}
    )
    assert (tmp_path / "out/figures/gallery.png").is_file()
    with pytest.raises(FileNotFoundError, match="score@vae-0"):
        report.load_inputs(tmp_path, ["vae"])


def test_stage_script_runs(tmp_path):
    make_fake_pipeline(tmp_path, seed=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_params(bootstrap=10)))
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages/report.py")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    metrics = json.loads((tmp_path / "reports/metrics.json").read_text())
    assert summary["unet"]["auroc"] == metrics["models"]["unet"]["auroc"] > 0.5
    assert summary["ae"]["auroc_ci95"] == metrics["models"]["ae"]["auroc_ci95"]


def test_one_abnormal_patient_gives_no_delong_but_keeps_the_bootstrap(analysis):
    """Clustered DeLong refuses a class seen in one patient; the report shows no DeLong
    interval or test there rather than failing, and keeps the (paired) bootstrap."""
    from imgae_dx.report import comparisons, detection, markdown

    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20, int), np.ones(6, int)]
    pid = np.r_[np.arange(20), np.full(6, 100)]  # every abnormal film: one patient
    frame = lambda s: pd.DataFrame(  # noqa: E731
        {"image": [f"i{k}" for k in range(26)], "label": y, "score": s, "patient_id": pid}
    )
    tests = {"a": frame(rng.normal(size=26) + y), "b": frame(rng.normal(size=26))}
    rp = config.ReportParams(bootstrap=50)
    c = comparisons.compare("a", "b", tests, rp, "patient")
    assert c.delong is None and c.p_delong is None and c.delta_ci is not None
    ranking = detection._ranking(y, tests["a"]["score"].to_numpy(), rp, pid.astype(str))
    assert ranking["auroc_ci_delong"] is None and ranking["auroc_ci"] is not None
    assert comparisons.compare("a", "b", tests, rp, "image").delong is not None
    text = "".join(markdown.comparisons(dataclasses.replace(analysis, comparisons=[c])))
    assert "fewer than two independent units" in text
    assert "fewer than two" not in "".join(markdown.comparisons(analysis))
