"""Every registered architecture: forward contract, learning, checkpoints, registry behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imgae_dx.models import (
    AnomalyModel,
    build_model,
    list_models,
    model_from_checkpoint,
    model_kwargs_schema,
    model_takes_image_size,
    register_model,
)
from imgae_dx.models.registry import PIPELINE_KWARGS, RESERVED_KEYS

SIZE = 32
#: Tiny CPU settings per architecture; a new architecture without an entry is built with its
#: defaults at SIZE x SIZE.
TINY: dict[str, dict] = {
    "ae": dict(channels=(4, 8), latent_dim=4, hidden_dim=32),
    "vae": dict(channels=(4, 8), latent_dim=4, hidden_dim=32),
    "unet": dict(depth=2, base_channels=4),
    "ra": dict(channels=(4, 8), latent_dim=8),
}


def smooth_batch(n: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """(n, 1, size, size) float32 in [0, 1]: random ellipses on a gradient, lightly blurred."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        cx, cy, rx, ry = (0.5 + 0.1 * torch.randn(4, generator=g)).tolist()
        body = (((xx - cx) / (0.35 + 0.05 * rx)) ** 2 + ((yy - cy) / (0.4 + 0.05 * ry)) ** 2) < 1
        out.append(0.2 + 0.5 * body.float() + 0.1 * yy)
    x = torch.stack(out)[:, None]
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False).clamp(0, 1)


def tiny(name: str, **extra) -> AnomalyModel:
    torch.manual_seed(0)
    return build_model(name, image_size=SIZE, **{**TINY.get(name, {}), **extra})


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return smooth_batch()


@pytest.mark.parametrize("name", list_models())
def test_forward_contract(name: str, x: torch.Tensor) -> None:
    model = tiny(name).eval()
    with torch.no_grad():
        y = model(x)
        y2 = model(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(y, y2), "eval-mode forward must be deterministic"
    assert model.default_score in ("sq", "ra")
    feats = model.encoder_features(x)
    assert feats and all(f.dim() == 4 and f.shape[0] == x.shape[0] for f in feats)


@pytest.mark.parametrize("name", list_models())
def test_training_steps_lower_the_loss(name: str, x: torch.Tensor) -> None:
    model = tiny(name)
    opts = model.configure_optimizers(lr=3e-3, weight_decay=0.0)
    model.eval()
    with torch.no_grad():
        before = float(model.validation_loss(x))
    model.train()
    for _ in range(40):
        logs = model.training_step(x, opts, grad_clip=5.0)
        assert "loss" in logs and all(np.isfinite(v) for v in logs.values()), logs
    model.eval()
    with torch.no_grad():
        after = float(model.validation_loss(x))
    assert after < 0.7 * before, (before, after)


@pytest.mark.parametrize("name", list_models())
def test_checkpoint_round_trip(name: str, x: torch.Tensor, tmp_path) -> None:
    model = tiny(name)
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    model.training_step(x, opts)  # non-trivial weights and BatchNorm statistics
    model.eval()
    path = tmp_path / f"{name}.pt"
    torch.save(
        {"arch": name, "model_args": model.model_args, "state_dict": model.state_dict()}, path
    )

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    rebuilt = model_from_checkpoint(ckpt).eval()
    rebuilt2 = build_model(ckpt["arch"], **ckpt["model_args"])
    rebuilt2.load_state_dict(ckpt["state_dict"])
    rebuilt2.eval()
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))
        assert torch.equal(model(x), rebuilt2(x))


def test_model_args_are_self_describing() -> None:
    ae = build_model("ae", image_size=SIZE, latent_dim=3)
    assert ae.model_args["image_size"] == SIZE and ae.model_args["latent_dim"] == 3
    assert ae.model_args["channels"] == [16, 32, 64, 64]  # defaults filled in, YAML-friendly
    unet = build_model("unet", image_size=SIZE, depth=2)  # image_size dropped: fully conv.
    assert "image_size" not in unet.model_args and unet.model_args["depth"] == 2


def test_registry_rejects_duplicates_and_bad_classes() -> None:
    class Dummy(AnomalyModel):
        def __init__(self, width: int = 1) -> None:
            super().__init__()

    with pytest.raises(ValueError, match="already registered"):
        register_model("ae")(Dummy)
    with pytest.raises(ValueError, match="snake_case"):
        register_model("NotSnake")(Dummy)
    with pytest.raises(ValueError, match="AnomalyModel"):
        register_model("not_a_model")(torch.nn.Linear)

    class UsesTrainingKey(AnomalyModel):
        def __init__(self, lr: float = 1e-3) -> None:
            super().__init__()

    with pytest.raises(ValueError, match="clashes with a training key"):
        register_model("uses_training_key")(UsesTrainingKey)
    assert "uses_training_key" not in list_models()


def test_unknown_names_and_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'nope' \(available: ae, ra, unet, vae"):
        build_model("nope")
    with pytest.raises(TypeError, match=r"arch\.unet: unknown key 'foo' \(valid: .*depth"):
        build_model("unet", foo=1)
    with pytest.raises(TypeError, match=r"unknown keys 'bar', 'foo'"):
        build_model("ae", foo=1, bar=2)
    with pytest.raises(ValueError, match="multiple of"):
        build_model("ae", image_size=30)
    with pytest.raises(ValueError, match="noise"):
        build_model("unet", noise="pink")


@pytest.mark.parametrize("name", list_models())
def test_schema_matches_constructor(name: str) -> None:
    schema = model_kwargs_schema(name)
    assert not set(schema) & PIPELINE_KWARGS  # image_size comes from data.image_size
    assert not set(schema) & RESERVED_KEYS  # lr/epochs/batch_size may live in arch.<name>
    assert all(not isinstance(v, tuple) for v in schema.values())
    # The schema's defaults are a valid params block.
    model = build_model(name, image_size=64, **schema)
    assert isinstance(model, AnomalyModel) and model.registry_name == name
    assert model_takes_image_size(name) == (name in ("ae", "vae", "ra"))


def test_default_scores() -> None:
    scores = {name: build_model(name, **TINY[name], image_size=SIZE).default_score for name in TINY}
    assert scores == {"ae": "sq", "vae": "sq", "unet": "sq", "ra": "ra"}
