"""params.yaml: loading and validation.

Every error names the offending key (``data.image_size``, ``arch.unet.depth``...), so a typo
in ``dvc exp run -S`` fails at once with a message that says what to fix. The blocks that are
function kwargs (``arch.<name>``, ``data.synthetic``, ``data.kaggle``, ``data.local``) are checked
against the signature of the function that receives them.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from imgae_dx.data import nih

PARAMS_FILE = "params.yaml"
SOURCES = ("synthetic", "kaggle", "local")

#: Keys of ``train`` that an ``arch.<name>`` block may override for that architecture alone
#: (e.g. ``dvc exp run -S arch.ra.lr=5e-5``); every other key of the block is a constructor kwarg.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 20,
    "batch_size": 64,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "patience": 5,
    "min_delta": 0.0,
    "grad_clip": 1.0,
    "scheduler": "cosine",
    "warmup_epochs": 0.0,
    "milestones": [],
    "lr_gamma": 0.1,
    "min_lr_ratio": 0.0,
    "val_batch_size": None,
    "max_train_batches_per_epoch": None,
    "device": "auto",
    "amp": True,
    "resume": True,
    "num_threads": None,
}
#: Machine/run settings that stay global; every other ``train`` key may be overridden per
#: architecture inside its ``arch.<name>`` block.
_GLOBAL_TRAIN_KEYS = ("device", "amp", "resume", "num_threads")
TRAIN_OVERRIDE_KEYS = tuple(k for k in TRAIN_DEFAULTS if k not in _GLOBAL_TRAIN_KEYS)


class ConfigError(ValueError):
    """A parameter is missing, unknown or of the wrong type; the message names the key."""


def load_params(path: str | os.PathLike = PARAMS_FILE) -> dict[str, Any]:
    """Read and validate ``params.yaml``; returns the plain nested dict."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the repository root)")
    try:
        params = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    validate(params, where=str(path))
    return params


def _get(d: Mapping[str, Any], key: str, where: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            raise ConfigError(f"{where}: missing key {key!r}")
        cur = cur[part]
    return cur


def _type(value: Any, kind: Any, key: str, where: str, *, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    ok = isinstance(value, kind) and not (
        kind in (int, float, (int, float)) and isinstance(value, bool)
    )
    if not ok:
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(
            f"{where}: {key}: expected {names}{' or null' if nullable else ''}, got {value!r}"
        )


def check_kwargs(
    block: Any, func: Callable[..., Any], key: str, where: str, *, skip: tuple[str, ...] = ()
) -> None:
    """Check that ``block`` holds only keyword arguments ``func`` accepts."""
    if not isinstance(block, Mapping):
        raise ConfigError(f"{where}: {key}: expected a mapping, got {block!r}")
    sig = inspect.signature(func)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return
    valid = [
        n
        for n, p in sig.parameters.items()
        if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and n != "self")
    ]
    for k in block:
        if k in skip:
            continue
        if k not in valid:
            raise ConfigError(
                f"{where}: {key}.{k}: unknown key (valid: {', '.join(v for v in valid if v not in skip)})"
            )


def validate(params: Mapping[str, Any], where: str = PARAMS_FILE) -> None:
    _type(_get(params, "seed", where), int, "seed", where)
    data = _get(params, "data", where)
    source = _get(params, "data.source", where)
    if source not in SOURCES:
        raise ConfigError(
            f"{where}: data.source: unknown source {source!r} (valid: {', '.join(SOURCES)})"
        )
    try:
        nih.normalize_shards(_get(params, "data.shards", where))
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from e
    views = _get(params, "data.views", where)
    if not isinstance(views, list) or not views or any(v not in nih.VIEWS for v in views):
        raise ConfigError(
            f"{where}: data.views: expected a non-empty list of {list(nih.VIEWS)}, got {views!r}"
        )
    size = _get(params, "data.image_size", where)
    _type(size, int, "data.image_size", where)
    if size < 16 or size % 16:
        raise ConfigError(f"{where}: data.image_size: expected a multiple of 16 ≥ 16, got {size}")
    for k in ("val_fraction", "test_fraction"):
        v = _get(params, f"data.{k}", where)
        _type(v, (int, float), f"data.{k}", where)
        if not 0 <= v < 1:
            raise ConfigError(f"{where}: data.{k}: expected a fraction in [0, 1), got {v}")
    for k in ("max_train", "max_val", "max_test_normal", "max_test_abnormal"):
        v = data.get(k)
        _type(v, int, f"data.{k}", where, nullable=True)
        if v is not None and v <= 0:
            raise ConfigError(f"{where}: data.{k}: expected a positive int or null, got {v}")
    from imgae_dx.data import sources

    for name in SOURCES:
        block = data.get(name) or {}
        check_kwargs(
            block, sources.entry_point(name), f"data.{name}", where, skip=sources.PIPELINE_ARGS
        )

    models = _get(params, "models", where)
    if not isinstance(models, list) or not models:
        raise ConfigError(f"{where}: models: expected a non-empty list of architecture names")
    from imgae_dx.models import build_model, list_models, model_kwargs_schema

    known = list_models()
    if len(set(models)) != len(models):
        raise ConfigError(f"{where}: models: duplicate entries in {models}")
    arch = params.get("arch") or {}
    for m in models:
        if m not in known:
            raise ConfigError(
                f"{where}: models: unknown architecture {m!r} (valid: {', '.join(known)})"
            )
        block = arch.get(m)
        if block is None:
            raise ConfigError(
                f"{where}: arch.{m}: missing (every entry of `models` needs its block, {{}} for defaults)"
            )
        if not isinstance(block, Mapping):
            raise ConfigError(f"{where}: arch.{m}: expected a mapping, got {block!r}")
        schema = model_kwargs_schema(m)
        for k in block:
            if k not in schema and k not in TRAIN_OVERRIDE_KEYS:
                raise ConfigError(
                    f"{where}: arch.{m}.{k}: unknown key (constructor kwargs: {', '.join(schema)}; "
                    f"training overrides: {', '.join(TRAIN_OVERRIDE_KEYS)})"
                )
    train = _get(params, "train", where)
    for k in train:
        if k not in TRAIN_DEFAULTS:
            raise ConfigError(
                f"{where}: train.{k}: unknown key (valid: {', '.join(TRAIN_DEFAULTS)})"
            )
    del build_model


def model_args(params: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """Constructor kwargs of ``arch``: its ``arch.<name>`` block minus training overrides, plus
    ``image_size`` from ``data.image_size`` when the constructor takes it."""
    from imgae_dx.models.registry import model_takes_image_size

    block = dict((params.get("arch") or {}).get(arch) or {})
    kwargs = {k: v for k, v in block.items() if k not in TRAIN_OVERRIDE_KEYS}
    if model_takes_image_size(arch):
        kwargs["image_size"] = params["data"]["image_size"]
    return kwargs


def train_args(params: Mapping[str, Any], arch: str) -> dict[str, Any]:
    """``train`` with defaults filled in and the architecture's overrides applied."""
    out = dict(TRAIN_DEFAULTS)
    out.update(params.get("train") or {})
    block = (params.get("arch") or {}).get(arch) or {}
    out.update({k: v for k, v in block.items() if k in TRAIN_OVERRIDE_KEYS})
    return out


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The repository the pipeline belongs to.

    ``dvc exp run --queue/--temp`` runs stages in a temporary copy under
    ``<repo>/.dvc/tmp/exps/...``; this returns ``<repo>`` there too, so that stores meant to be
    shared between runs (MLflow) land in one place.
    """
    p = Path(start or os.getcwd()).resolve()
    parts = p.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    for q in (p, *p.parents):
        if (q / "dvc.yaml").exists() or (q / ".dvc").is_dir():
            return q
    return p
