"""The training loop: determinism, exact resume, early stopping, learning, schedule, devices."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from imgae_dx.device import autocast_context, resolve_device, to_channels_last
from imgae_dx.models import AnomalyModel, build_model, list_models
from imgae_dx.models.base import pixel_mse
from imgae_dx.train import lr_factor, train_model, validation_loss

SIZE = 16
TINY: dict[str, dict] = {
    "ae": dict(channels=(4, 8), latent_dim=4, hidden_dim=32),
    "vae": dict(channels=(4, 8), latent_dim=4, hidden_dim=32),
    "unet": dict(depth=2, base_channels=4),
    "ra": dict(channels=(4, 8), latent_dim=8),
}
DETERMINISTIC_COLUMNS = ["epoch", "train_loss", "val_loss", "lr"]


def phantoms(n: int, seed: int, size: int = SIZE) -> np.ndarray:
    """uint8 (n, size, size): a bright ellipse with two dark 'lungs', jittered, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size), np.uint8)
    for i in range(n):
        cx, cy = 0.5 + rng.normal(0, 0.03, 2)
        img = 0.15 + 0.5 * ((((xx - cx) / 0.42) ** 2 + ((yy - cy) / 0.48) ** 2) < 1)
        for side in (-1, 1):
            lung = (((xx - cx - side * 0.18) / 0.13) ** 2 + ((yy - cy) / 0.3) ** 2) < 1
            img = img - 0.35 * lung
        img = img + rng.normal(0, 0.02, img.shape)
        out[i] = np.clip(img * 255, 0, 255).astype(np.uint8)
    return out


@pytest.fixture(autouse=True, scope="module")
def _one_thread_module():
    # Tiny tensors: one thread is as fast, and robust when the CPU is shared with other jobs
    # (OpenMP threads spin-waiting on each other can slow a test tenfold).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread(_one_thread_module):
    torch.set_num_threads(1)  # after the test-wide conftest's per-test settings


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    return phantoms(48, seed=1), phantoms(16, seed=2)


def tiny(name: str) -> AnomalyModel:
    torch.manual_seed(0)
    return build_model(name, image_size=SIZE, **TINY[name])


def run(name: str, data, **kwargs):
    kwargs = {"epochs": 3, "batch_size": 16, "lr": 3e-3, "seed": 0, "device": "cpu", **kwargs}
    return train_model(tiny(name), *data, **kwargs)


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", ["vae", "ra"])
def test_same_call_twice_is_bit_identical(name: str, data) -> None:
    r1 = run(name, data)
    r2 = run(name, data)
    assert_same_state(r1.best_state_dict, r2.best_state_dict)
    pd.testing.assert_frame_equal(
        r1.history[DETERMINISTIC_COLUMNS], r2.history[DETERMINISTIC_COLUMNS]
    )
    assert not torch.are_deterministic_algorithms_enabled()  # restored after the call


class Crash(RuntimeError):
    pass


def test_resume_continues_exactly(data, tmp_path) -> None:
    # The RA: two optimizers, global-RNG sampling and a cosine schedule all have to resume.
    kw = dict(epochs=4, scheduler="cosine", warmup_epochs=1)
    straight = run("ra", data, checkpoint_path=tmp_path / "a.ckpt", **kw)

    def crash_after_two(row: dict) -> None:
        if row["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run("ra", data, checkpoint_path=tmp_path / "b.ckpt", on_epoch=crash_after_two, **kw)
    resumed = run("ra", data, checkpoint_path=tmp_path / "b.ckpt", resume=True, **kw)

    assert resumed.resumed_from_epoch == 2 and len(resumed.history) == 4
    assert resumed.initial_val_loss == straight.initial_val_loss  # carried by the checkpoint
    assert_same_state(straight.best_state_dict, resumed.best_state_dict)
    pd.testing.assert_frame_equal(
        straight.history.drop(columns=["seconds", "images_per_s"]),
        resumed.history.drop(columns=["seconds", "images_per_s"]),
    )
    last_a = torch.load(tmp_path / "a.ckpt", weights_only=True)
    last_b = torch.load(tmp_path / "b.ckpt", weights_only=True)
    assert_same_state(last_a["model"], last_b["model"])
    for oa, ob in zip(last_a["optimizers"], last_b["optimizers"], strict=True):
        for sa, sb in zip(oa["state"].values(), ob["state"].values(), strict=True):
            assert torch.equal(sa["exp_avg"], sb["exp_avg"])


def test_resume_can_extend_training(data, tmp_path) -> None:
    straight = run("ae", data, epochs=4, scheduler="none")
    run("ae", data, epochs=2, scheduler="none", checkpoint_path=tmp_path / "c.ckpt")
    extended = run(
        "ae", data, epochs=4, scheduler="none", checkpoint_path=tmp_path / "c.ckpt", resume=True
    )
    assert extended.resumed_from_epoch == 2
    assert_same_state(straight.best_state_dict, extended.best_state_dict)


def test_resume_with_other_settings_starts_afresh(data, tmp_path, caplog) -> None:
    run("ae", data, epochs=1, checkpoint_path=tmp_path / "d.ckpt")
    with caplog.at_level(logging.WARNING, logger="imgae_dx.train"):
        res = run("ae", data, epochs=1, lr=1e-3, checkpoint_path=tmp_path / "d.ckpt", resume=True)
    assert res.resumed_from_epoch == 0
    assert "differs in: lr" in caplog.text


class MeanImage(AnomalyModel):
    """BatchNorm-free toy model: predicts one learned constant intensity."""

    def __init__(self) -> None:
        super().__init__()
        self.logit = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logit).expand_as(x)

    def training_loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return pixel_mse(self(x), x), {}


def test_early_stopping_on_a_plateau(data) -> None:
    seen: list[int] = []
    # lr = 0: the validation loss is exactly flat from the first epoch on.
    res = train_model(
        MeanImage(), *data, epochs=20, batch_size=16, lr=0.0, patience=2, device="cpu",
        on_epoch=lambda row: seen.append(row["epoch"]),
    )  # fmt: skip
    assert res.stopped_early and res.best_epoch == 1
    assert seen == [1, 2, 3] and list(res.history["epoch"]) == [1, 2, 3]


def test_no_early_stop_while_improving(data) -> None:
    res = train_model(MeanImage(), *data, epochs=4, batch_size=16, lr=0.05, patience=1)
    assert not res.stopped_early and res.best_epoch == 4


@pytest.mark.parametrize("name", list_models())
def test_validation_loss_decreases(name: str, data) -> None:
    model = tiny(name)
    start = validation_loss(model, data[1], device="cpu")
    lr = 3e-3 if name == "ra" else 1e-2  # the introspective RA wants a gentler step
    res = train_model(
        model, *data, epochs=8, batch_size=8, lr=lr, seed=0, device="cpu", grad_clip=5.0
    )
    assert res.best_val_loss < 0.75 * start, (start, res.history["val_loss"].tolist())
    assert res.initial_val_loss == pytest.approx(start)  # the untrained model's, as recorded
    assert list(res.history.columns[:6]) == [
        "epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s",
    ]  # fmt: skip
    assert res.history["images_per_s"].gt(0).all()
    assert res.device.startswith("cpu")
    # The model is left holding the best weights, in eval mode.
    assert not model.training
    assert validation_loss(model, data[1], device="cpu") == pytest.approx(res.best_val_loss)


def test_rejects_bad_inputs(data) -> None:
    train, val = data
    with pytest.raises(ValueError, match="uint8"):
        train_model(MeanImage(), train.astype(np.float32), val, epochs=1, batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match="validation normal"):
        train_model(MeanImage(), train, val[:0], epochs=1, batch_size=4, lr=0.1)
    with pytest.raises(ValueError, match="scheduler"):
        train_model(MeanImage(), train, val, epochs=1, batch_size=4, lr=0.1, scheduler="step")


def test_max_batches_and_channel_dim(data) -> None:
    train, val = data
    res = train_model(
        MeanImage(), train[:, None], val, epochs=1, batch_size=4, lr=0.1,
        max_train_batches_per_epoch=2, num_workers=0, num_threads=2,
    )  # fmt: skip
    assert res.history["images_per_s"].iloc[0] > 0
    assert torch.get_num_threads() == 1  # restored (the autouse fixture set 1)


def test_lr_schedule() -> None:
    f = [lr_factor("cosine", s, 10, 5, warmup_epochs=1) for s in range(50)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[9:], f[10:])) and f[-1] < 0.01
    m = [lr_factor("multistep", s, 10, 5, milestones=[2, 4], lr_gamma=0.1) for s in range(50)]
    assert m[19] == 1.0 and m[20] == pytest.approx(0.1) and m[40] == pytest.approx(0.01)
    assert lr_factor("none", 37, 10, 5) == 1.0


def test_device_helpers() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    cpu = torch.device("cpu")
    assert isinstance(autocast_context(cpu, True), contextlib.nullcontext)
    x = torch.zeros(2, 1, 4, 4)
    assert to_channels_last(x, cpu) is x


def test_training_keys_are_reserved_in_the_registry() -> None:
    import inspect

    from imgae_dx.models.registry import RESERVED_KEYS

    not_hyper = {"model", "train_images", "val_images", "checkpoint_path", "resume", "on_epoch"}
    not_hyper |= {"deterministic", "desc"}
    hyper = set(inspect.signature(train_model).parameters) - not_hyper
    assert hyper <= RESERVED_KEYS, hyper - RESERVED_KEYS


@pytest.mark.parametrize("name", list_models())
def test_cuda_numerics_emulated_on_cpu(name: str, data, monkeypatch) -> None:
    """The CUDA path's numerics — bf16 autocast and channels-last tensors and weights — run
    on CPU, so a model that breaks under them (a ``.view`` on a channels-last tensor, a dtype
    mismatch in a hand-written step, a loss that overflows or stops learning in bf16) fails
    here without a GPU."""
    import imgae_dx.device
    import imgae_dx.train as train_mod

    entered = []

    def bf16_factory(device, enabled=True):
        def factory():
            entered.append(enabled)
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)

        return factory

    monkeypatch.setattr(train_mod, "autocast_factory", bf16_factory)
    # the real conversion, told that this device is one where channels-last pays off
    monkeypatch.setattr(imgae_dx.device, "uses_channels_last", lambda device: True)
    model = tiny(name)
    start = validation_loss(model, data[1], device="cpu", amp=False)
    entered.clear()
    lr = 3e-3 if name == "ra" else 1e-2
    res = train_model(
        model, *data, epochs=8, batch_size=8, lr=lr, seed=0, device="cpu", grad_clip=5.0
    )
    assert entered and all(entered)  # the steps really ran under bf16 autocast
    assert np.isfinite(res.history[["train_loss", "val_loss"]].to_numpy()).all()
    assert res.best_val_loss < 0.75 * start, (start, res.history["val_loss"].tolist())
    # Weights stay float32 (autocast casts per op); 4-D conv weights were made channels-last.
    assert all(p.dtype == torch.float32 for p in model.parameters())
    convs = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert convs and all(p.is_contiguous(memory_format=torch.channels_last) for p in convs)
    # bf16 reconstructions agree with float32 ones to bf16 precision.
    x = torch.from_numpy(data[1][:4, None].astype(np.float32) / 255.0)
    with torch.no_grad():
        ref = model(x).float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(to_channels_last(x, torch.device("cpu"))).float()
    assert low.shape == ref.shape and (low - ref).abs().max() < 0.05
