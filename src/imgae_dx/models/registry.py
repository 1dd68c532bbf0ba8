"""An explicit model registry (as in torchvision ``models/_api.py`` and timm ``register_model``).

Each architecture module decorates its class with ``@register_model("<name>")``; the name is the
module name and the ``arch.<name>`` block of params.yaml. No discovery by subclass scanning:
``grep register_model`` lists every architecture.

Constructor keyword arguments are the model's params block, with one exception: ``image_size``
is not a params key. Architectures with a dense bottleneck (ae, vae, ra) take it, and the
pipeline passes ``data.image_size`` to :func:`build_model` automatically; fully convolutional
ones (unet) do not take it, and :func:`build_model` then drops it.
"""

from __future__ import annotations

import inspect
from typing import Any

from imgae_dx.models.base import AnomalyModel

__all__ = [
    "PIPELINE_KWARGS",
    "build_model",
    "constructor_params",
    "get_model_class",
    "list_models",
    "model_takes_image_size",
    "register_model",
]

_REGISTRY: dict[str, type[AnomalyModel]] = {}

#: Constructor kwargs supplied by the pipeline rather than by ``arch.<name>``.
PIPELINE_KWARGS: frozenset[str] = frozenset({"image_size"})


def reserved_keys() -> frozenset[str]:
    """Names no constructor may use: the ``train`` keys (:class:`imgae_dx.config.TrainParams`),
    which an ``arch.<name>`` block may hold to override training for that architecture."""
    from imgae_dx.config import TrainParams

    return frozenset(TrainParams.model_fields)


def register_model(name: str):
    """Class decorator: register an :class:`AnomalyModel` subclass under ``name``.

    Raises ``ValueError`` on a duplicate name, a non-snake_case name, a class that is not an
    ``AnomalyModel``, or a constructor that is not explicit (``*args``/``**kwargs``, a kwarg
    without a default, or a kwarg named like a training key (:func:`reserved_keys`)).
    """
    if not name or not name.isidentifier() or name.lower() != name:
        raise ValueError(f"model name must be a snake_case identifier, got {name!r}")

    def decorator(cls: type[AnomalyModel]) -> type[AnomalyModel]:
        if name in _REGISTRY:
            raise ValueError(
                f"model {name!r} is already registered (by {_REGISTRY[name].__module__}."
                f"{_REGISTRY[name].__qualname__})"
            )
        if not (isinstance(cls, type) and issubclass(cls, AnomalyModel)):
            raise ValueError(f"@register_model({name!r}) needs an AnomalyModel subclass")
        reserved = reserved_keys()
        for pname, param in constructor_params(cls).items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ValueError(f"{cls.__qualname__}.__init__ must not take *{pname}/**{pname}")
            if param.default is param.empty:
                raise ValueError(f"{cls.__qualname__}.__init__: kwarg {pname!r} needs a default")
            if pname in reserved:
                raise ValueError(
                    f"{cls.__qualname__}.__init__: kwarg {pname!r} clashes with a training key "
                    f"that arch.{name} may override ({sorted(reserved)})"
                )
        cls.registry_name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def constructor_params(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments, in order (``self`` left out)."""
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop("self", None)
    return params


def list_models() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[AnomalyModel]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r} (available: {', '.join(list_models()) or 'none'})"
        ) from None


def model_takes_image_size(name: str) -> bool:
    """Whether the architecture's constructor takes ``image_size`` (dense bottleneck)."""
    return "image_size" in constructor_params(get_model_class(name))


def build_model(name: str, /, **kwargs: Any) -> AnomalyModel:
    """Instantiate the architecture ``name`` with ``kwargs`` (its ``arch.<name>`` block).

    ``image_size`` is passed on only when the constructor takes it. Unknown keys raise
    ``TypeError`` naming the key and listing the valid ones, e.g.
    ``arch.unet: unknown key 'foo' (valid: base_channels, depth, ...)``.
    """
    cls = get_model_class(name)
    params = constructor_params(cls)
    kwargs = dict(kwargs)
    for key in PIPELINE_KWARGS:
        if key in kwargs and key not in params:
            kwargs.pop(key)
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        valid = ", ".join(sorted(k for k in params if k not in PIPELINE_KWARGS))
        keys = ", ".join(repr(k) for k in unknown)
        noun = "key" if len(unknown) == 1 else "keys"
        raise TypeError(f"arch.{name}: unknown {noun} {keys} (valid: {valid})")
    model = cls(**kwargs)
    # Self-description for checkpoints: every constructor kwarg (image_size included when the
    # architecture takes it), defaults filled in, so the model can be rebuilt from it alone.
    merged = {**{p: params[p].default for p in params}, **kwargs}
    model.model_args = {k: (list(v) if isinstance(v, tuple) else v) for k, v in merged.items()}
    return model
