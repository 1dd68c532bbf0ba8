"""``imgae-dx select``: the ranking reads validation losses only, and names what to apply."""

from __future__ import annotations

import json

import pytest

from imgae_dx import cli, experiments
from imgae_dx.errors import UserError

DATA = {"image_size": 64, "source": "synthetic"}


def _row(name, rev, val_losses, aurocs, data=DATA, error=None, metrics=True):
    headline = {a: {"auroc": aurocs[a], "val_loss": v} for a, v in val_losses.items()}
    headline["ae_vs_vae"] = {"delta_auroc": 0.01, "p_holm": 0.5}  # a comparison: no val_loss
    return {
        "rev": rev,
        "name": name,
        "data": {
            "rev": rev,
            "params": {"params.yaml": {"data": {"data": data, "seed": 0}}},
            "metrics": {"reports/headline.json": {"data": headline}} if metrics else {},
        },
        "error": error,
        "experiments": None,
    }


def _exp(row):
    return {"revs": [row], "name": row["name"], "executor": None}


def _exp_show():
    base = _row("main", "a" * 40, {"ae": 0.020, "vae": 0.030}, {"ae": 0.70, "vae": 0.60})
    base["experiments"] = [
        # the best test AUROC, but a worse validation loss: must not win
        _exp(_row("lucky", "b" * 40, {"ae": 0.025, "vae": 0.031}, {"ae": 0.95, "vae": 0.6})),
        _exp(_row("better", "c" * 40, {"ae": 0.010, "vae": 0.040}, {"ae": 0.65, "vae": 0.6})),
        # a lower loss at another image size measures something else
        _exp(_row("small", "d" * 40, {"ae": 0.001}, {"ae": 0.5}, data={**DATA, "image_size": 32})),
        _exp(_row("failed", "e" * 40, {}, {}, error={"msg": "x"}, metrics=False)),
    ]
    workspace = _row(None, "workspace", {"ae": 0.0001}, {"ae": 0.99})
    return [workspace, base]


def test_ranks_by_validation_loss_not_test_auroc():
    shown = _exp_show()
    r = experiments.rank(list(experiments.candidates(shown)), "ae")
    assert [c.name for c, _ in r.ranked] == ["small"]
    assert {c.name for c in r.not_comparable} == {"better", "main", "lucky"}
    same_size = [c for c in experiments.candidates(shown) if c.name != "small"]
    r = experiments.rank(same_size, "ae")
    assert [(c.name, v) for c, v in r.ranked] == [
        ("better", 0.01),
        ("main", 0.02),
        ("lucky", 0.025),
    ]
    assert experiments.format_ranking(r)[-1] == "  best: better -> dvc exp apply better"


def test_a_baseline_that_wins_is_not_applied():
    shown = _exp_show()
    cands = [c for c in experiments.candidates(shown) if c.name != "small"]
    lines = experiments.format_ranking(experiments.rank(cands, "vae"))
    assert lines[1].split()[:3] == ["1.", "main", "0.03"]
    assert lines[-1] == "  best: the baseline commit main (no experiment beats it)"


def test_select_command_prints_each_architecture(tmp_path, capsys):
    path = tmp_path / "exp.json"
    path.write_text(json.dumps(_exp_show()))
    assert cli.main(["select", "--exp-show", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "ae: experiments by validation-normal loss (lower is better)"
    assert "dvc exp apply small" in out and "vae: experiments" in out
    assert "failed" not in out and "workspace" not in out
    assert cli.main(["select", "--exp-show", str(path), "--arch", "ra"]) == 1
    assert "--arch ra: no experiment has a validation loss for it" in capsys.readouterr().err


def test_no_headline_anywhere_is_one_line():
    with pytest.raises(UserError, match="no experiment with reports/headline.json"):
        experiments.select([_row("main", "a" * 40, {}, {}, metrics=False)])
