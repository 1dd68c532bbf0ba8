"""Parameter counts of every architecture: defaults at 64x64 and the paper preset.

The paper preset is the ``arch:`` block of ``configs/paper.yaml`` (training keys such as ``lr``
dropped) at its ``data.image_size`` (128). Builds each model on the CPU; nothing is trained.

    python benchmarks/param_counts.py [--paper configs/paper.yaml] [--image-size 64]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from imgae_dx.models import build_model, list_models, model_kwargs_schema

ROOT = Path(__file__).resolve().parents[1]


def count(name: str, image_size: int, kwargs: dict) -> int:
    model = build_model(name, image_size=image_size, **kwargs)
    return sum(p.numel() for p in model.parameters())


def paper_kwargs(name: str, block: dict) -> dict:
    schema = model_kwargs_schema(name)
    return {k: v for k, v in (block or {}).items() if k in schema}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", type=Path, default=ROOT / "configs" / "paper.yaml")
    parser.add_argument("--image-size", type=int, default=64, help="input side for the defaults")
    args = parser.parse_args()

    paper = yaml.safe_load(args.paper.read_text(encoding="utf-8"))
    paper_size = int(paper["data"]["image_size"])
    rows = []
    for name in list_models():
        default = count(name, args.image_size, {})
        block = paper["arch"].get(name)
        big = count(name, paper_size, paper_kwargs(name, block)) if block is not None else None
        rows.append((name, default, big))

    head = f"{'arch':<6} {f'default @ {args.image_size}²':>18} {f'paper @ {paper_size}²':>18}"
    print(head)
    print("-" * len(head))
    for name, default, big in rows:
        big_s = f"{big:,}" if big is not None else "-"
        print(f"{name:<6} {default:>18,} {big_s:>18}")


if __name__ == "__main__":
    main()
