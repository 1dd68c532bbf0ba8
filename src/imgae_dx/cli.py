"""Small command-line helpers: ``imgae-dx preset-args FILE`` and ``imgae-dx param-counts``.

``preset-args`` turns a params overlay (e.g. ``configs/paper.yaml``) into ``-S key=value``
arguments for ``dvc exp run``, so a preset runs as an ordinary, comparable experiment:

    dvc exp run $(imgae-dx preset-args configs/paper.yaml)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def overlay_args(overlay: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``{"arch": {"ra": {"latent_dim": 128}}}`` → ``["-S", "arch.ra.latent_dim=128"]``."""
    out: list[str] = []
    for k, v in overlay.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += overlay_args(v, key + ".")
        else:
            out += [
                "-S",
                f"{key}={json.dumps(v, separators=(',', ':')) if not isinstance(v, str) else v}",
            ]
    return out


def param_counts(image_size: int, params_file: str | None) -> list[tuple[str, int]]:
    from imgae_dx.config import model_args
    from imgae_dx.models import build_model, list_models

    rows = []
    params = yaml.safe_load(Path(params_file).read_text()) if params_file else None
    for name in list_models():
        if params is not None and name in (params.get("arch") or {}):
            p = {"arch": params["arch"], "data": {"image_size": image_size}}
            kwargs = model_args(p, name)
        else:
            kwargs = {"image_size": image_size}
        model = build_model(name, **kwargs)
        rows.append((name, sum(p.numel() for p in model.parameters())))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="imgae-dx", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preset-args", help="print `-S key=value` arguments for `dvc exp run`")
    p.add_argument("overlay", help="a params overlay, e.g. configs/paper.yaml")
    c = sub.add_parser("param-counts", help="parameter count of each architecture")
    c.add_argument("--params", default="params.yaml", help="params file whose arch blocks to use")
    c.add_argument(
        "--image-size", type=int, default=None, help="default: data.image_size of --params"
    )
    args = ap.parse_args(argv)
    if args.cmd == "preset-args":
        overlay = yaml.safe_load(Path(args.overlay).read_text()) or {}
        print(" ".join(shlex.quote(a) for a in overlay_args(overlay)))
    else:
        params = yaml.safe_load(Path(args.params).read_text())
        size = args.image_size or params["data"]["image_size"]
        for name, n in param_counts(size, args.params):
            print(f"{name:6s} {n:>12,d}  ({size}x{size})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
