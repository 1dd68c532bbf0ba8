"""Training throughput (images/s) and peak memory of each architecture on the available device.

Times ``model.training_step`` on random data after a warm-up, exactly as the training loop calls
it: bf16 autocast and channels-last on CUDA, and on the CPU channels-last and bf16 autocast
where ``train.cpu_bf16`` applies (float32 elsewhere). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the peak resident set size of a fresh
subprocess per model on CPU.

    python benchmarks/train_throughput.py                       # params.yaml's models, 64x64
    python benchmarks/train_throughput.py --preset paper        # configs/paper.yaml sizes
    python benchmarks/train_throughput.py --models ra --batch-size 16 --steps 5
    python benchmarks/train_throughput.py --preset paper --steps 1 --warmup 0 --batch-size 2
    python benchmarks/train_throughput.py --compare-loop --out benchmarks/results/train_loop.json

``--compare-loop`` runs, per architecture and interleaved in one process (so a shared machine
slows every variant alike), the project's training loop (``train_model``: one epoch of
``--steps`` batches from a uint8 array, its shuffling, conversion, schedules and checks) and a
bare PyTorch loop (``model.training_step`` on float tensors made beforehand), each ``--repeats``
times; on the CPU also the bare loop without channels-last and in the other precision (float32
where the loop uses bf16 autocast, bf16 where it does not), the two settings
``imgae_dx.device`` decides on. ``--out`` writes the rows and the machine
(``benchmarks/_machine.py``) as JSON for ``benchmarks/report.py``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from imgae_dx.config import TrainParams, load_params
from imgae_dx.device import (
    autocast_factory,
    bf16_autocast,
    describe_device,
    resolve_device,
    to_channels_last,
    torch_runtime,
)
from imgae_dx.models import build_model, list_models
from imgae_dx.train import train_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _machine import describe_machine  # noqa: E402


def preset_kwargs(name: str, preset: str, paper: Path) -> tuple[dict, int | None, int]:
    """(constructor kwargs, image size, batch size) of ``arch.<name>``: params.yaml's for the
    default preset, with configs/paper.yaml laid over it for ``paper``."""
    params = load_params(ROOT / "params.yaml", overlay=paper if preset == "paper" else None)
    kwargs = params.model_args(name) if name in params.arch else {}
    kwargs.pop("image_size", None)
    return kwargs, params.data.image_size, params.train_for(name).batch_size


def measure(name: str, args: argparse.Namespace) -> dict:
    device = resolve_device(args.device)
    kwargs, size, batch = preset_kwargs(name, args.preset, args.paper)
    size = args.image_size or size or 64
    args.batch_size = args.batch_size or batch
    torch.manual_seed(0)
    model = build_model(name, image_size=size, **kwargs).to(device)
    to_channels_last(model, device)
    optimizers = model.configure_optimizers(1e-4, 0.0)
    cpu_bf16 = load_params(ROOT / "params.yaml").train.cpu_bf16
    bf16 = bf16_autocast(device, not args.no_amp, cpu_bf16)
    autocast = autocast_factory(device, not args.no_amp, cpu_bf16)
    x = to_channels_last(torch.rand(args.batch_size, 1, size, size, device=device), device)
    model.train()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        model.training_step(x, optimizers, autocast=autocast)
    sync()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        model.training_step(x, optimizers, autocast=autocast)
        sync()
        times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "arch": name,
        "device": describe_device(device) + (", bf16 autocast" if bf16 else ""),
        "image_size": size,
        "batch_size": args.batch_size,
        "params": sum(p.numel() for p in model.parameters()),
        "ms_per_step": 1000 * step,
        "images_per_s": args.batch_size / step,
        "epoch_s_3000": 3000 / args.batch_size * step,
        "peak_mb": peak_mb,
    }


# ---- the training loop against a bare PyTorch loop (--compare-loop) ---------------------------
def _fresh(name: str, size: int, kwargs: dict, device: torch.device, cl: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model(name, image_size=size, **kwargs).to(device)
    return model.to(memory_format=torch.channels_last) if cl else model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_loop(name: str, size: int, kwargs: dict, batches: list, device: torch.device,
              *, cl: bool = True, bf16: bool | None = None, cpu_bf16: bool = False) -> float:  # fmt: skip
    """images/s of ``model.training_step`` over float tensors made beforehand (one warm-up
    step first): no shuffling, conversion, schedule or bookkeeping. ``bf16``: autocast on or
    off; None: what the training loop decides (``imgae_dx.device.bf16_autocast`` with
    ``cpu_bf16``)."""
    model = _fresh(name, size, kwargs, device, cl)
    optimizers = model.configure_optimizers(1e-4, 0.0)
    xs = [b.contiguous(memory_format=torch.channels_last) if cl else b for b in batches]
    if bf16 is None:
        autocast = autocast_factory(device, True, cpu_bf16)  # as the training loop
    else:

        def autocast():
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    model.train()
    with torch_runtime(device, deterministic=True):
        model.training_step(xs[0], optimizers, grad_clip=1.0, autocast=autocast)
        _sync(device)
        t0 = time.perf_counter()
        for x in xs:
            model.training_step(x, optimizers, grad_clip=1.0, autocast=autocast)
        _sync(device)
    return len(xs) * xs[0].shape[0] / (time.perf_counter() - t0)


def project_loop(name: str, size: int, kwargs: dict, data: tuple, config: TrainParams) -> float:
    """images/s of one epoch of ``train_model`` (its own measure: the training pass only)."""
    model = _fresh(name, size, kwargs, torch.device("cpu"), False)  # the loop moves it
    result = train_model(model, *data, config, seed=0, desc=f"bench {name}")
    return float(result.history["images_per_s"].iloc[0])


def _variants(name: str, size: int, kwargs: dict, batch: int, args, cpu_bf16: bool) -> dict:
    """The variants to interleave for one architecture: name -> () -> images/s. ``loop`` and
    ``bare`` train in the precision the loop decides on (``train.cpu_bf16``); on the CPU also
    the bare loop without channels-last, and in the other precision (``bare_fp32`` where the
    loop uses bf16, else ``bare_bf16``)."""
    device = resolve_device(args.device)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.steps * batch, size, size), generator=gen)
    images = images.to(torch.uint8).numpy()
    floats = [
        torch.from_numpy(images[i : i + batch]).to(device).unsqueeze(1).float().div_(255)
        for i in range(0, len(images), batch)
    ]
    config = TrainParams(
        epochs=1, batch_size=batch, lr=1e-4, device=str(device), resume=False,
        max_train_batches_per_epoch=args.steps, scheduler="cosine", grad_clip=1.0,
        cpu_bf16=cpu_bf16,
    )  # fmt: skip
    data = (images, images[: max(batch, 8)])
    variants = {
        "loop": lambda: project_loop(name, size, kwargs, data, config),
        "bare": lambda: bare_loop(name, size, kwargs, floats, device, cpu_bf16=cpu_bf16),
    }
    if device.type == "cpu":
        bf16 = bf16_autocast(device, True, cpu_bf16)
        variants["bare_contiguous"] = lambda: bare_loop(
            name, size, kwargs, floats, device, cl=False, bf16=bf16
        )
        other = "bare_fp32" if bf16 else "bare_bf16"
        variants[other] = lambda: bare_loop(name, size, kwargs, floats, device, bf16=not bf16)
    return variants


def compare_loop(name: str, args: argparse.Namespace) -> dict:
    """Median images/s of each variant over ``args.repeats`` interleaved rounds (a first,
    discarded round warms every variant up), and the ratios to the bare loop."""
    params = load_params(ROOT / "params.yaml")
    kwargs = params.model_args(name)
    size = args.image_size or kwargs.pop("image_size", 64)
    kwargs.pop("image_size", None)
    batch = args.batch_size or params.train_for(name).batch_size
    variants = _variants(name, size, kwargs, batch, args, params.train.cpu_bf16)
    rates: dict[str, list[float]] = {k: [] for k in variants}
    for round_ in range(args.repeats + 1):
        for key, fn in variants.items():
            rate = fn()
            if round_ > 0:
                rates[key].append(rate)
    med = {k: statistics.median(v) for k, v in rates.items()}
    row = {"arch": name, "image_size": size, "batch_size": batch, "steps": args.steps}
    row.update({f"{k}_images_per_s": v for k, v in med.items()})
    row.update({f"{k}_over_bare": v / med["bare"] for k, v in med.items() if k != "bare"})
    device = resolve_device(args.device)
    bf16 = bf16_autocast(device, True, params.train.cpu_bf16)
    row["device"] = describe_device(device) + (", bf16 autocast" if bf16 else "")
    return row


def write_json(path: Path, kind: str, rows: list[dict], args: argparse.Namespace) -> None:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    doc = {"kind": kind, "machine": describe_machine(), "settings": settings, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None, help="default: all registered")
    parser.add_argument("--preset", choices=("default", "paper"), default="default")
    parser.add_argument("--paper", type=Path, default=ROOT / "configs" / "paper.yaml")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument(
        "--batch-size", type=int, default=None, help="default: the preset's, per architecture"
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-amp", action="store_true", help="disable bf16 autocast on CUDA")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", action="store_true", help="print JSON lines")
    parser.add_argument("--compare-loop", action="store_true", help="loop vs bare (see above)")
    parser.add_argument("--repeats", type=int, default=3, help="--compare-loop rounds")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one model and exit
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    if args.one:
        print(json.dumps(measure(args.one, args)))
        return
    if args.compare_loop:
        rows = []
        for name in args.models or list_models():
            rows.append(compare_loop(name, args))
            print(json.dumps(rows[-1]), flush=True)  # as each finishes
        if args.out is not None:
            write_json(args.out, "train_loop", rows, args)
        return

    names = args.models or list_models()
    cpu = resolve_device(args.device).type != "cuda"
    rows = []
    for name in names:
        if cpu:  # a fresh process per model, so the peak RSS is that model's own
            argv = [a for a in sys.argv[1:] if a != "--json"]
            if args.out is not None:  # the parent alone writes the file
                i = argv.index("--out")
                argv = argv[:i] + argv[i + 2 :]
            out = subprocess.run(
                [sys.executable, __file__, *argv, "--one", name],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
        else:
            rows.append(measure(name, args))

    if args.out is not None:
        write_json(args.out, f"train_{args.preset}", rows, args)
    if args.json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"device: {rows[0]['device']}, amp: {not args.no_amp}, preset: {args.preset}")
    head = (
        f"{'arch':<6} {'size':>5} {'batch':>5} {'params':>12} {'ms/step':>9} {'img/s':>8} "
        f"{'epoch@3000 (s)':>15} {'peak MB':>9}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['arch']:<6} {r['image_size']:>5} {r['batch_size']:>5} {r['params']:>12,} "
            f"{r['ms_per_step']:>9.1f} {r['images_per_s']:>8.1f} {r['epoch_s_3000']:>15.1f} "
            f"{r['peak_mb']:>9.0f}"
        )


if __name__ == "__main__":
    main()
