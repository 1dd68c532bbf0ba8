"""Training seeds through the real `dvc repro`: a copy of the session's tiny reproduced
workspace (``seeds: [0]``), narrowed to two architectures.

Seed 1 is added: only the new seed's branches (and the report) run, the data split is
untouched, each seed has its own model, curve and scores, and the report's seed ensemble and
mean ± sd agree with numbers recomputed here from the per-seed score files.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn.metrics import roc_auc_score

from tests.conftest import copy_workspace, run_checked

MODELS = ["ae", "unet"]
SPLIT_FILES = [f"data/split/{n}.csv" for n in ("train", "val", "test")] + [
    f"data/prepared/{n}.npy" for n in ("train", "val", "test")
]


def _ran(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def _digests(ws, files) -> dict[str, str]:
    return {f: hashlib.sha256((ws / f).read_bytes()).hexdigest() for f in files}


def _test_scores(ws, arch: str, seed: int) -> pd.DataFrame:
    df = pd.read_csv(ws / f"reports/scores/{arch}/seed{seed}.csv", dtype={"image": str})
    return df[df["split"] == "test"].set_index("image").sort_index()


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_adding_a_seed_trains_only_it_and_the_report_aggregates_both(tiny_reproduced, tmp_path):
    src, env, first = tiny_reproduced  # first: the output of its `dvc repro`
    ws = tmp_path / "repo"
    env = copy_workspace(src, ws, env)
    dvc = [sys.executable, "-m", "dvc"]
    assert {"train@ae-0", "score@unet-0", "split"} <= _ran(first)
    params = yaml.safe_load((ws / "params.yaml").read_text())
    assert params["seeds"] == [0] and set(MODELS) < set(params["models"])
    params["models"] = MODELS
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    narrowed = run_checked([*dvc, "repro"], ws, env).stdout
    assert _ran(narrowed) == {"check", "report", "cards"}, narrowed  # the branches are there
    split_before = _digests(ws, SPLIT_FILES)
    model0 = _digests(ws, ["models/ae/seed0.pt", "models/unet/seed0.pt"])
    one_seed = json.loads((ws / "reports/metrics.json").read_text())
    assert "seeds" not in one_seed  # one seed: the report reads as before
    assert "Training seeds" not in (ws / "reports/report.md").read_text()

    params = yaml.safe_load((ws / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    second = run_checked([*dvc, "repro"], ws, env).stdout
    new = {f"{s}@{m}-1" for s in ("train", "score", "detector") for m in MODELS}
    assert _ran(second) == {"check", "report", "cards"} | new, second

    # The split and the prepared data do not depend on the training seed; seed 0 kept its model.
    assert _digests(ws, SPLIT_FILES) == split_before
    assert _digests(ws, list(model0)) == model0
    for arch in MODELS:
        ck0 = torch.load(ws / f"models/{arch}/seed0.pt", weights_only=True)
        ck1 = torch.load(ws / f"models/{arch}/seed1.pt", weights_only=True)
        assert (ck0["params"]["seed"], ck1["params"]["seed"]) == (0, 1)
        assert ck0["params"]["split_seed"] == ck1["params"]["split_seed"] == params["seed"]
        w0, w1 = ck0["state_dict"], ck1["state_dict"]
        assert any(not torch.equal(w0[k], w1[k]) for k in w0), arch  # another initialisation
        assert (ws / f"reports/train/{arch}/seed1.csv").is_file()
    _check_report(ws)
    _check_cards(ws)

    con = sqlite3.connect(ws / "mlflow-test.db")
    names = {r[0] for r in con.execute("select name from runs")}
    aliases = set(con.execute("select name, alias, version from registered_model_aliases"))
    tags = dict(con.execute("select name || ':' || version, value from model_version_tags "
                            "where key = 'seed'"))  # fmt: skip
    latest = dict(con.execute("select name, max(version) from model_versions group by name"))
    con.close()
    assert {"train@ae-1", "score@unet-1"} <= names
    for arch in MODELS:  # every seed's detector is a version, aliased and tagged with its seed
        name = f"imgae-dx-{arch}"
        by_alias = {a: v for n, a, v in aliases if n == name}
        assert set(by_alias) == {"seed0", "seed1"} and by_alias["seed0"] != by_alias["seed1"]
        for k in (0, 1):
            assert tags[f"{name}:{by_alias[f'seed{k}']}"] == str(k)
        assert latest[name] == by_alias["seed0"]  # models:/imgae-dx-<arch>/latest: the first seed


def _check_cards(ws) -> None:
    """Every seed's detector in its architecture's card, with figures recomputed here from its
    score file and its detector's threshold."""
    from imgae_dx.detector import load_detector

    metrics = json.loads((ws / "reports/metrics.json").read_text())
    for arch in MODELS:
        card = (ws / f"reports/model_cards/{arch}.md").read_text()
        assert "## Every training seed's detector" in card
        rows = {r.split("|")[1].strip(): r for r in card.splitlines() if r.startswith("| ")}
        for k in (0, 1):
            test = _test_scores(ws, arch, k)
            thr = load_detector(ws / f"models/detectors/{arch}/seed{k}.pt").meta["threshold"]
            y, s = test["label"].to_numpy(), test["score"].to_numpy()
            flagged = s > thr["value"]
            sens, spec = flagged[y == 1].mean(), (~flagged[y == 0]).mean()
            cells = [c.strip() for c in rows[str(k)].split("|")[1:-1]]
            assert cells[1] == f"`models/detectors/{arch}/seed{k}.pt`"
            assert cells[2] == f"{thr['value']:.6g}"
            assert cells[3].startswith(f"{roc_auc_score(y, s):.3f} [")
            assert cells[5:7] == [f"{sens:.3f}", f"{spec:.3f}"]
            assert cells[7] == f"`models:/imgae-dx-{arch}@seed{k}`"
        # the full sections describe seed 0: its own operating point, not the ensemble's
        assert f"sensitivity {cells_of(rows, 0)[5]} and specificity {cells_of(rows, 0)[6]}" in card
        ens = metrics["models"][arch]
        assert cells_of(rows, "ensemble")[3].startswith(f"{ens['auroc']:.3f} [")


def cells_of(rows: dict[str, str], key) -> list[str]:
    return [c.strip() for c in rows[str(key)].split("|")[1:-1]]


def _check_report(ws) -> None:
    """metrics.json against numbers recomputed from the per-seed score files."""
    metrics = json.loads((ws / "reports/metrics.json").read_text())
    assert metrics["seeds"]["seeds"] == [0, 1]
    for arch in MODELS:
        s0, s1 = _test_scores(ws, arch, 0), _test_scores(ws, arch, 1)
        assert s0.index.equals(s1.index) and (s0["label"] == s1["label"]).all()
        per_seed = [roc_auc_score(s["label"], s["score"]) for s in (s0, s1)]
        block = metrics["seeds"]["models"][arch]
        assert block["n_seeds"] == 2
        for k, auroc in enumerate(per_seed):
            assert block["per_seed"][str(k)]["auroc"] == pytest.approx(auroc, abs=1e-5)
            lo, hi = block["per_seed"][str(k)]["auroc_ci95"]
            assert lo <= block["per_seed"][str(k)]["auroc"] <= hi
        assert block["auroc_mean"] == pytest.approx(np.mean(per_seed), abs=1e-5)
        assert block["auroc_sd"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-5)
        ensemble = roc_auc_score(s0["label"], (s0["score"] + s1["score"]) / 2)
        assert metrics["models"][arch]["auroc"] == pytest.approx(ensemble, abs=1e-5)
        assert {f"{arch}/seed0", f"{arch}/seed1"} <= set(metrics["training"]["models"])
    md = (ws / "reports/report.md").read_text()
    assert "### Training seeds" in md and "(n=2)" in md
    assert "training seeds 0, 1" in md
    mean, sd = (metrics["seeds"]["models"]["ae"][k] for k in ("auroc_mean", "auroc_sd"))
    assert f"{mean:.3f} ± {sd:.3f} (n=2)" in md
