"""Small command-line helpers: ``imgae-dx preset-args FILE``, ``param-counts``, ``check-metrics``,
``check-training``.

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

from imgae_dx import paths
from imgae_dx.config import Params, dotted_items, load_params, read_yaml
from imgae_dx.errors import UserError, run


def overlay_args(overlay: Mapping[str, Any]) -> list[str]:
    """``{"arch": {"ra": {"latent_dim": 128}}}`` → ``["-S", "arch.ra.latent_dim=128"]``."""
    out: list[str] = []
    for key, v in dotted_items(overlay):
        out += ["-S", f"{key}={v if isinstance(v, str) else json.dumps(v, separators=(',', ':'))}"]
    return out


def param_counts(params: Params, image_size: int | None = None) -> list[tuple[str, int]]:
    """Parameter count of every registered architecture under ``params`` (its ``arch`` blocks;
    defaults for an architecture without one) at ``image_size`` (default: ``data.image_size``)."""
    from imgae_dx.models import build_model, list_models, model_takes_image_size

    size = image_size or params.data.image_size
    rows = []
    for name in list_models():
        kwargs = params.model_args(name) if name in params.arch else {}
        if model_takes_image_size(name):
            kwargs["image_size"] = size
        model = build_model(name, **kwargs)
        rows.append((name, sum(p.numel() for p in model.parameters())))
    return rows


def compare_metrics(
    committed: Mapping[str, Any], current: Mapping[str, Any], tolerance: float
) -> list[str]:
    """Headline differences (per-model AUROC/AUPRC, data counts) larger than ``tolerance``."""
    problems = []
    for k, v in (committed.get("data") or {}).items():
        if (current.get("data") or {}).get(k) != v:
            problems.append(
                f"data.{k}: committed {v!r}, reproduced {(current.get('data') or {}).get(k)!r}"
            )
    for arch, m in (committed.get("models") or {}).items():
        cur = (current.get("models") or {}).get(arch)
        if cur is None:
            problems.append(f"models.{arch}: missing from the reproduced metrics")
            continue
        for key in ("auroc", "auprc"):
            a, b = m.get(key), cur.get(key)
            if a is None or b is None or abs(float(a) - float(b)) > tolerance:
                problems.append(
                    f"models.{arch}.{key}: committed {a}, reproduced {b} (tolerance {tolerance})"
                )
    return problems


def check_training(
    result: Mapping[str, Any], max_over_initial: float, max_over_reference: float
) -> list[str]:
    """Models of a metrics dict that did not train: selected validation loss above
    ``max_over_initial`` x the untrained one, or at least ``max_over_reference`` x the loss of
    predicting the mean training image. Missing training figures count as failures. With
    several training seeds, every seed's run is checked (``ae/seed1: ...``)."""
    from imgae_dx.report.seeds import run_label

    training = result.get("training") or {}
    per_model = training.get("models") or {}
    seeds = (result.get("seeds") or {}).get("seeds") or [0]  # absent: one seed
    problems = []
    for arch, k in ((a, k) for a in result.get("models") or {} for k in seeds):
        label = run_label(arch, k, seeds)
        t = per_model.get(label)
        if t is None:
            where = paths.train_curve(arch, k)  # one seed: metrics.json does not name it
            where = where.parent / "seed<k>.csv" if len(seeds) == 1 else where
            problems.append(f"{label}: no training curve in the metrics ({where.as_posix()})")
            continue
        r0, rr = t.get("best_over_initial"), t.get("best_over_reference")
        if r0 is None:
            problems.append(f"{label}: no untrained (epoch 0) validation loss recorded")
        elif r0 > max_over_initial:
            problems.append(
                f"{label}: selected val loss {t['best_val_loss']:.4g} is {r0:.3f} x the untrained "
                f"{t['initial_val_loss']:.4g} (allowed: {max_over_initial})"
            )
        if rr is None:
            problems.append(f"{label}: no mean-image reference (data/prepared train/val missing)")
        elif rr >= max_over_reference:
            problems.append(
                f"{label}: selected val loss {t['best_val_loss']:.4g} is {rr:.3f} x the mean-image "
                f"reference {training.get('reference_val_mse'):.4g} (must be < {max_over_reference})"
            )
    return problems


def _read_json(path: str) -> Any:
    """A metrics file's content; a missing or malformed file is a one-line :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file (run `dvc repro report`, or check the path)")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{p}: not valid JSON ({e}); regenerate it with `dvc repro report`") from e


def _check_training(args: argparse.Namespace) -> int:
    result = _read_json(args.metrics)
    problems = check_training(result, args.max_over_initial, args.max_over_reference)
    for p in problems:
        print(f"UNDERTRAINED {p}")
    if not problems:
        for arch, m in (result.get("training") or {}).get("models", {}).items():
            print(
                f"{arch:6s} val loss {m['initial_val_loss']:.4g} -> {m['best_val_loss']:.4g} "
                f"(x{m['best_over_initial']:.3f}; x{m['best_over_reference']:.3f} of mean image)"
            )
    return 1 if problems else 0


def _check_metrics(args: argparse.Namespace) -> int:
    committed = _read_json(args.committed)
    current = _read_json(args.current)
    problems = compare_metrics(committed, current, args.tolerance)
    for p in problems:
        print(f"MISMATCH {p}")
    if not problems:
        n = len(committed.get("models") or {})
        print(
            f"reproduced metrics match the committed ones ({n} models, tolerance {args.tolerance})"
        )
    return 1 if problems else 0


def _preset_args(args: argparse.Namespace) -> int:
    overlay = read_yaml(args.overlay)
    if not isinstance(overlay, Mapping):
        raise UserError(f"{args.overlay}: expected a mapping of params keys, like params.yaml")
    print(" ".join(shlex.quote(a) for a in overlay_args(overlay)))
    return 0


def _param_counts(args: argparse.Namespace) -> int:
    params = load_params(overlay=args.params)
    size = args.image_size or params.data.image_size
    for name, n in param_counts(params, size):
        print(f"{name:6s} {n:>12,d}  ({size}x{size})")
    return 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="imgae-dx", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("preset-args", help="print `-S key=value` arguments for `dvc exp run`")
    p.add_argument("overlay", help="a params overlay, e.g. configs/paper.yaml")
    p.set_defaults(run=_preset_args)
    c = sub.add_parser("param-counts", help="parameter count of each architecture")
    c.add_argument(
        "--params",
        default=None,
        help="an overlay such as configs/paper.yaml, applied over params.yaml (default: none)",
    )
    c.add_argument(
        "--image-size", type=int, default=None, help="default: data.image_size of the params"
    )
    c.set_defaults(run=_param_counts)
    d = sub.add_parser("check-metrics", help="compare reproduced metrics with a committed copy")
    d.add_argument("committed", help="the committed metrics.json (e.g. from `git show HEAD:...`)")
    d.add_argument("current", nargs="?", default=str(paths.METRICS))
    d.add_argument("--tolerance", type=float, default=0.0, help="allowed |Δ| of AUROC/AUPRC")
    d.set_defaults(run=_check_metrics)
    t = sub.add_parser(
        "check-training", help="fail if a model's validation loss did not fall well below its start"
    )
    t.add_argument("metrics", nargs="?", default=str(paths.METRICS))
    t.add_argument(
        "--max-over-initial",
        type=float,
        default=0.5,
        help="selected / untrained validation loss must not exceed this",
    )
    t.add_argument(
        "--max-over-reference",
        type=float,
        default=1.0,
        help="selected / mean-image validation loss must stay below this",
    )
    t.set_defaults(run=_check_training)
    return ap


def main(argv: list[str] | None = None) -> int:
    """``imgae-dx <command>``; a user error is one line (``--debug``: with its traceback)."""

    def command(args: list[str]) -> int:
        ns = _parser().parse_args(args)
        return ns.run(ns)

    return run(command, argv)


if __name__ == "__main__":
    sys.exit(main())
