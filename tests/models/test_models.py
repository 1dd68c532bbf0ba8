"""Every registered architecture: forward contract, learning, checkpoints, registry behaviour."""

from __future__ import annotations

import pytest
import torch

from imgae_dx.checkpoint import load_model, save_model
from imgae_dx.models import (
    AnomalyModel,
    build_model,
    list_models,
    model_takes_image_size,
    register_model,
)
from imgae_dx.models.registry import PIPELINE_KWARGS, reserved_keys
from tests.conftest import TINY_ARCH, phantoms, tiny_model

SIZE = 32


def tiny(name: str, **extra) -> AnomalyModel:
    return tiny_model(name, SIZE, **extra)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return phantoms(8, seed=0, size=SIZE)


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
def test_checkpoint_round_trip(name: str, x: torch.Tensor, tmp_path) -> None:
    model = tiny(name)
    opts = model.configure_optimizers(lr=1e-3, weight_decay=0.0)
    model.training_step(x, opts)  # non-trivial weights and BatchNorm statistics
    model.eval()
    path = tmp_path / f"{name}.pt"
    save_model(
        path, {"arch": name, "model_args": model.model_args, "state_dict": model.state_dict()}
    )

    rebuilt, ckpt = load_model(path)  # the file alone: no params
    assert not rebuilt.training
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
def test_params_block_is_the_constructor(name: str) -> None:
    """``arch.<name>`` holds exactly the constructor's kwargs (image_size aside: it comes from
    data.image_size) with the same defaults, plus the train overrides; the defaults build."""
    from imgae_dx.config import TRAIN_OVERRIDE_KEYS, arch_block_model
    from imgae_dx.models.registry import constructor_params, get_model_class

    block = arch_block_model(name).model_fields
    ctor = {
        k: p.default
        for k, p in constructor_params(get_model_class(name)).items()
        if k not in PIPELINE_KWARGS
    }
    assert {k: f.default for k, f in block.items() if k not in TRAIN_OVERRIDE_KEYS} == ctor
    assert set(block) - set(ctor) == set(TRAIN_OVERRIDE_KEYS)
    assert not set(ctor) & reserved_keys()  # lr/epochs/batch_size may live in arch.<name>
    model = build_model(name, image_size=64, **ctor)
    assert isinstance(model, AnomalyModel) and model.registry_name == name
    assert model_takes_image_size(name) == (name in ("ae", "vae", "ra"))


def test_default_scores() -> None:
    scores = {name: tiny(name).default_score for name in TINY_ARCH}
    assert scores == {"ae": "sq", "vae": "sq", "unet": "sq", "ra": "ra"}


def test_unreadable_checkpoints_name_the_file(tmp_path) -> None:
    from imgae_dx.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"cut\.pt: unreadable checkpoint"):
        load_model(tmp_path / "cut.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt: not an ImgAE-Dx model checkpoint"):
        load_model(tmp_path / "other.pt")
