"""Anomaly-detection architectures and their registry.

Importing this package registers every architecture: ``ae``, ``vae``, ``unet``, ``ra``
(registry key = module name = ``arch.<name>`` params block).
"""

from imgae_dx.models import ae, ra, unet, vae  # noqa: F401  (imported to register the models)
from imgae_dx.models.base import AnomalyModel
from imgae_dx.models.registry import (
    build_model,
    get_model_class,
    list_models,
    model_takes_image_size,
    register_model,
)

__all__ = [
    "AnomalyModel",
    "build_model",
    "get_model_class",
    "list_models",
    "model_takes_image_size",
    "register_model",
]
