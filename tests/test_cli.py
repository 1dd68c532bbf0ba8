from __future__ import annotations

from imgae_dx.cli import main, overlay_args


def test_overlay_args_flatten_nested_keys():
    args = overlay_args(
        {"data": {"image_size": 128}, "arch": {"ra": {"channels": [64, 128], "noise": "coarse"}}}
    )
    assert args == [
        "-S",
        "data.image_size=128",
        "-S",
        "arch.ra.channels=[64,128]",
        "-S",
        "arch.ra.noise=coarse",
    ]


def test_param_counts_for_repository_params(capsys):
    assert main(["param-counts"]) == 0
    out = capsys.readouterr().out
    assert {line.split()[0] for line in out.strip().splitlines()} == {"ae", "vae", "unet", "ra"}


def test_check_metrics_flags_headline_drift(tmp_path, capsys):
    import json

    base = {"data": {"n_train": 10}, "models": {"ae": {"auroc": 0.70, "auprc": 0.6}}}
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(base))
    b.write_text(
        json.dumps({"data": {"n_train": 10}, "models": {"ae": {"auroc": 0.705, "auprc": 0.6}}})
    )
    assert main(["check-metrics", str(a), str(b), "--tolerance", "0.01"]) == 0
    assert main(["check-metrics", str(a), str(b)]) == 1
    assert "models.ae.auroc" in capsys.readouterr().out
