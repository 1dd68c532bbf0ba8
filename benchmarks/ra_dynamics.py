"""Training dynamics of the Reversed Autoencoder: loss terms and validation MSE every few steps.

Trains ``ra`` on the prepared default data (``data/prepared``, from ``dvc repro prepare``) with a
constant learning rate, and every ``--eval-every`` steps records the mean of the logged training
terms since the last record (MSE of the sampled reconstruction, KL of real images, of
reconstructions and of prior samples, the two exp-ELBOs, the embedding loss) and the validation
MSE of the posterior-mean reconstruction in eval mode -- the quantity the training loop selects
checkpoints on. One CSV row per record.

    python benchmarks/ra_dynamics.py --steps 600 --out /tmp/ra_default.csv
    python benchmarks/ra_dynamics.py --steps 600 --set beta_rec=0.5 --out /tmp/ra_paper_beta.csv
    python benchmarks/ra_dynamics.py --steps 600 --set beta_rec=0.5 --augment affine_flip ...
    python benchmarks/ra_dynamics.py --data /tmp/prepared128 --set channels=[8,16,32,64,64] ...
    # the paper's widths (README, "Paper-size preset"; ~10 s a step on two cores):
    python benchmarks/ra_dynamics.py --data /tmp/prepared128 --steps 200 --eval-every 40 \
        --batch-size 8 --lr 5e-5 --grad-clip 0 --threads 2 --set channels=[64,128,256,512,512] \
        --set latent_dim=128 --set beta_rec=0.5 --out /tmp/ra_paper_widths.csv

``--augment affine_flip`` augments every training batch as ``train.augment`` does (the RA
reference's random affine + flip, drawn from ``(seed, 0, step)``); validation is never augmented.
``--set key=value`` overrides an ``arch.ra`` constructor kwarg (YAML-parsed value); the others
come from ``params.yaml`` (or ``--params``). ``--data`` points at another prepared directory
(``train.npy``/``val.npy``), e.g. one prepared at 128x128 with
``imgae_dx.data.prepare.prepare_split``. The figures in the ``imgae_dx.models.ra`` docstring
come from this script.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import yaml

from imgae_dx.augment import AUGMENTS, augment_batch
from imgae_dx.config import load_params
from imgae_dx.device import images_to_tensor
from imgae_dx.models import build_model
from imgae_dx.train import validation_loss

ROOT = Path(__file__).resolve().parents[1]


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--grad-clip", type=float, default=1.0, help="0 = no clipping")
    ap.add_argument(
        "--augment", choices=AUGMENTS, default="off", help="train.augment of the training batches"
    )
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, required=True)
    return ap


def _model(args: argparse.Namespace, image_size: int):
    """``arch.ra`` of the params file with the ``--set`` overrides, seeded."""
    kwargs = load_params(args.params).model_args("ra")
    for item in args.set:
        key, _, value = item.partition("=")
        kwargs[key] = yaml.safe_load(value)
    torch.manual_seed(args.seed)
    return build_model("ra", **{**kwargs, "image_size": image_size})


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Sorted index batches of a reshuffled permutation, a new one when the last runs out."""
    order, pos = rng.permutation(n), 0
    while True:
        if pos + batch_size > len(order):
            order, pos = rng.permutation(n), 0
        yield np.sort(order[pos : pos + batch_size])
        pos += batch_size


def _val_mse(model, val: np.ndarray) -> float:
    """The posterior-mean validation MSE the training loop selects on (eval mode)."""
    out = validation_loss(model, val, batch_size=128, device=torch.device("cpu"), amp=False)
    model.train()
    return out


def _print(row: dict) -> None:
    terms = ("train_mse", "train_kl", "train_kl_rec", "train_kl_fake")
    print(
        f"step {row['step']:5d}  val_mse {row['val_mse']:.5f}  "
        + "  ".join(f"{k[6:]} {row[k]:.4g}" for k in terms if k in row),
        flush=True,
    )


def _write(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for row in rows for k in row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    train = np.load(args.data / "train.npy", mmap_mode="r")
    val = np.load(args.data / "val.npy")
    model = _model(args, int(train.shape[-1]))
    optimizers = model.configure_optimizers(args.lr, 0.0)
    batches = _batches(len(train), args.batch_size, np.random.default_rng(args.seed))
    rows: list[dict] = [{"step": 0, "seconds": 0.0, "val_mse": _val_mse(model, val)}]
    sums: dict[str, float] = {}
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = torch.from_numpy(np.ascontiguousarray(train[next(batches)]))
        batch = augment_batch(batch, args.augment, seed=args.seed, epoch=0, step=step)
        x = images_to_tensor(batch, torch.device("cpu"))
        for k, v in model.training_step(x, optimizers, grad_clip=args.grad_clip).items():
            sums[k] = sums.get(k, 0.0) + v
        if step % args.eval_every == 0:
            row = {"step": step, "seconds": round(time.perf_counter() - t0, 1)}
            row["val_mse"] = _val_mse(model, val)
            row.update({f"train_{k}": v / args.eval_every for k, v in sorted(sums.items())})
            sums = {}
            rows.append(row)
            _print(row)
            _write(args.out, rows)  # every record: a run stopped early keeps what it measured
    _write(args.out, rows)
    best = min(rows, key=lambda r: r["val_mse"])
    print(
        f"best val_mse {best['val_mse']:.5f} at step {best['step']}; final {rows[-1]['val_mse']:.5f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
