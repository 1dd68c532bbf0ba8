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
