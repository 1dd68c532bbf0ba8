"""The training loop: determinism, exact resume, early stopping, learning, schedule, devices."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from imgae_dx.config import TrainParams
from imgae_dx.device import autocast_context, resolve_device, to_channels_last
from imgae_dx.models import AnomalyModel, list_models
from imgae_dx.models.base import pixel_mse
from imgae_dx.train import lr_factor, train_model, validation_loss
from tests.conftest import phantoms_uint8, tiny_model

SIZE = 16
DETERMINISTIC_COLUMNS = ["epoch", "train_loss", "val_loss", "lr"]


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
    return phantoms_uint8(48, seed=1, size=SIZE), phantoms_uint8(16, seed=2, size=SIZE)


def cfg(**kw) -> TrainParams:
    """Training settings for the tests: no early stopping or clipping unless asked."""
    return TrainParams(**{"patience": None, "grad_clip": None, "device": "cpu", **kw})


def run(name: str, data, *, checkpoint_path=None, on_epoch=None, **kw):
    config = cfg(**{"epochs": 3, "batch_size": 16, "lr": 3e-3, **kw})
    return train_model(
        tiny_model(name, SIZE), *data, config, seed=0,
        checkpoint_path=checkpoint_path, on_epoch=on_epoch,
    )  # fmt: skip


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
    resumed = run("ra", data, checkpoint_path=tmp_path / "b.ckpt", **kw)

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
    assert last_a["schedulers"] == last_b["schedulers"]


def test_resume_can_extend_a_constant_schedule(data, tmp_path) -> None:
    straight = run("ae", data, epochs=4, scheduler="none")
    run("ae", data, epochs=2, scheduler="none", checkpoint_path=tmp_path / "c.ckpt")
    extended = run("ae", data, epochs=4, scheduler="none", checkpoint_path=tmp_path / "c.ckpt")
    assert extended.resumed_from_epoch == 2
    assert_same_state(straight.best_state_dict, extended.best_state_dict)


def test_resume_with_other_settings_starts_afresh(data, tmp_path, caplog) -> None:
    run("ae", data, epochs=2, checkpoint_path=tmp_path / "d.ckpt")
    with caplog.at_level(logging.WARNING, logger="imgae_dx.checkpoint"):
        res = run("ae", data, epochs=2, lr=1e-3, checkpoint_path=tmp_path / "d.ckpt")
    assert res.resumed_from_epoch == 0
    assert "differs in: lr" in caplog.text
    # The cosine schedule depends on the number of epochs: a longer run is another run.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="imgae_dx.checkpoint"):
        res = run("ae", data, epochs=3, lr=1e-3, checkpoint_path=tmp_path / "d.ckpt")
    assert res.resumed_from_epoch == 0 and "differs in: epochs" in caplog.text
    # resume: false never resumes; an unreadable state is named and replaced.
    assert run("ae", data, epochs=3, lr=1e-3, resume=False, checkpoint_path=tmp_path / "d.ckpt")
    (tmp_path / "d.ckpt").write_bytes(b"truncated")
    with caplog.at_level(logging.WARNING, logger="imgae_dx.checkpoint"):
        res = run("ae", data, epochs=1, checkpoint_path=tmp_path / "d.ckpt")
    assert res.resumed_from_epoch == 0 and "unreadable checkpoint" in caplog.text


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
        MeanImage(), *data, cfg(epochs=20, batch_size=16, lr=0.0, patience=2),
        on_epoch=lambda row: seen.append(row["epoch"]),
    )  # fmt: skip
    assert res.stopped_early and res.best_epoch == 1
    assert seen == [1, 2, 3] and list(res.history["epoch"]) == [1, 2, 3]


def test_no_early_stop_while_improving(data) -> None:
    res = train_model(MeanImage(), *data, cfg(epochs=4, batch_size=16, lr=0.05, patience=1))
    assert not res.stopped_early and res.best_epoch == 4


def _bf16_channels_last_on_cpu(monkeypatch) -> list[bool]:
    """The CUDA path's numerics -- bf16 autocast, channels-last tensors and weights -- on CPU."""
    import imgae_dx.device
    import imgae_dx.train as train_mod

    entered: list[bool] = []

    def bf16_factory(device, enabled=True, cpu_bf16=False):
        def factory():
            entered.append(enabled)
            return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)

        return factory

    monkeypatch.setattr(train_mod, "autocast_factory", bf16_factory)
    # the real conversion, told that this device is one where channels-last pays off
    monkeypatch.setattr(imgae_dx.device, "uses_channels_last", lambda device: True)
    return entered


@pytest.mark.parametrize("numerics", ["float32", "cuda-emulated"])
@pytest.mark.parametrize("name", list_models())
def test_every_model_learns(name: str, numerics: str, data, monkeypatch) -> None:
    """Each registered model, trained by the loop, ends well below its untrained validation
    loss -- in float32, and under the CUDA path's numerics emulated on CPU (bf16 autocast,
    channels-last), so a model that breaks there (a ``.view`` on a channels-last tensor, a
    dtype mismatch in a hand-written step, a loss that overflows in bf16) fails without a GPU."""
    model = tiny_model(name, SIZE)
    start = validation_loss(model, data[1], device="cpu", amp=False)
    entered = _bf16_channels_last_on_cpu(monkeypatch) if numerics != "float32" else None
    lr = 3e-3 if name == "ra" else 1e-2  # the introspective RA wants a gentler step
    res = train_model(model, *data, cfg(epochs=8, batch_size=8, lr=lr, grad_clip=5.0))
    assert np.isfinite(res.history[["train_loss", "val_loss"]].to_numpy()).all()
    assert res.best_val_loss < 0.75 * start, (start, res.history["val_loss"].tolist())
    assert not model.training  # left holding the best weights, in eval mode
    if entered is None:
        assert res.initial_val_loss == pytest.approx(start)  # the untrained model's, as recorded
        assert list(res.history.columns[:6]) == [
            "epoch", "train_loss", "val_loss", "lr", "seconds", "images_per_s",
        ]  # fmt: skip
        assert res.history["images_per_s"].gt(0).all() and res.device.startswith("cpu")
        assert validation_loss(model, data[1], device="cpu") == pytest.approx(res.best_val_loss)
        return
    assert entered and all(entered)  # the steps really ran under bf16 autocast
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


def test_rejects_bad_inputs(data) -> None:
    train, val = data
    with pytest.raises(ValueError, match="uint8"):
        train_model(MeanImage(), train.astype(np.float32), val, cfg(epochs=1))
    with pytest.raises(ValueError, match="validation normal"):
        train_model(MeanImage(), train, val[:0], cfg(epochs=1))
    with pytest.raises(ValueError, match="scheduler"):
        cfg(scheduler="step")


def test_max_batches_and_channel_dim(data) -> None:
    train, val = data
    res = train_model(
        MeanImage(), train[:, None], val,
        cfg(epochs=1, batch_size=4, lr=0.1, max_train_batches_per_epoch=2, num_threads=2),
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
    assert isinstance(autocast_context(cpu, True), contextlib.nullcontext)  # cpu_bf16 is opt-in
    x = torch.zeros(2, 3, 4, 4)
    assert to_channels_last(x, cpu).is_contiguous(memory_format=torch.channels_last)
    assert not to_channels_last(x, torch.device("meta")).is_contiguous(
        memory_format=torch.channels_last
    )  # MPS and others: left as is
    y = torch.zeros(2, 4)
    assert to_channels_last(y, cpu) is y  # not 4-D


def test_schedule_is_a_torch_lr_scheduler(data) -> None:
    """The lr of every step comes from torch's LambdaLR over lr_factor: the logged lr of each
    epoch is the factor of that epoch's last step."""
    res = run("ae", data, epochs=3, batch_size=16, lr=1e-2, scheduler="cosine", warmup_epochs=1)
    steps = 48 // 16
    want = [1e-2 * lr_factor("cosine", e * steps - 1, steps, 3, warmup_epochs=1) for e in (1, 2, 3)]
    assert res.history["lr"].tolist() == pytest.approx(want)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list_models())
def test_trains_on_cuda(name: str, data, tmp_path) -> None:
    """The real CUDA path: bf16 autocast, channels-last, CUDA RNG in the resume state."""
    model = tiny_model(name, SIZE)
    res = train_model(
        model, *data, cfg(epochs=2, batch_size=8, lr=3e-3, device="cuda"),
        checkpoint_path=tmp_path / "c.ckpt",
    )  # fmt: skip
    assert res.device.startswith("cuda") and np.isfinite(res.best_val_loss)
    assert "cuda" in torch.load(tmp_path / "c.ckpt", weights_only=True)["rng"]


@pytest.mark.parametrize("native", [True, False])
def test_cpu_bf16_autocast_only_where_the_cpu_has_bf16_instructions(native, monkeypatch) -> None:
    """``train.cpu_bf16`` turns on bf16 autocast on the CPU only where it is native; elsewhere
    (and with ``amp`` off) the step runs in float32, and the resume fingerprint says which."""
    import imgae_dx.device as device_mod
    from imgae_dx.checkpoint import fingerprint

    monkeypatch.setattr(device_mod, "cpu_bf16_native", lambda: native)
    cpu, conv = torch.device("cpu"), torch.nn.Conv2d(1, 2, 3)
    x = torch.rand(1, 1, 8, 8)
    for amp, cpu_bf16, want in ((True, True, native), (True, False, False), (False, True, False)):
        assert device_mod.bf16_autocast(cpu, amp, cpu_bf16) is want
        with device_mod.autocast_factory(cpu, amp, cpu_bf16)():
            assert conv(x).dtype == (torch.bfloat16 if want else torch.float32)
    assert not device_mod.bf16_autocast(torch.device("mps"), True, True)
    model, images = tiny_model("ae", SIZE), phantoms_uint8(4, 0, SIZE)
    prints = [
        fingerprint(model, TrainParams(cpu_bf16=flag), cpu, seed=0, train_images=images,
                    val_images=images)["settings"]["amp"]
        for flag in (False, True)
    ]  # fmt: skip
    assert prints == [False, native]


def test_cpu_bf16_training_is_reproducible_and_named(data, monkeypatch) -> None:
    """Where the CPU has bf16 instructions, a cpu_bf16 run trains under autocast, says so in
    its device, and gives the same weights twice."""
    from imgae_dx.device import cpu_bf16_native

    if not cpu_bf16_native():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    runs = [run("ae", data, epochs=2, batch_size=16, cpu_bf16=True) for _ in range(2)]
    assert runs[0].device.endswith("bf16 autocast")
    for k, v in runs[0].best_state_dict.items():
        assert torch.equal(v, runs[1].best_state_dict[k]), k
    plain = run("ae", data, epochs=2, batch_size=16, cpu_bf16=False)
    assert "bf16" not in plain.device
    assert plain.best_val_loss != runs[0].best_val_loss  # autocast really changed the numerics
