"""The machine a benchmark ran on, in words and numbers, stored next to every figure.

Absolute timings mean little without the CPU and what else was running; ratios measured
interleaved in one process are the figures to trust on a shared machine. ``describe_machine``
reads ``lscpu`` (when present), ``os`` and ``/proc/loadavg``: no timing of its own.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

#: CPU flags that decide whether bf16 autocast can pay off on the CPU.
BF16_FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def _lscpu() -> dict[str, str]:
    exe = shutil.which("lscpu")
    if exe is None:
        return {}
    out = subprocess.run([exe], capture_output=True, text=True, check=False).stdout
    fields = {}
    for line in out.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _loadavg() -> dict[str, float | int] | None:
    path = Path("/proc/loadavg")
    if not path.exists():
        return None
    one, five, fifteen, running, *_ = path.read_text().split()
    return {
        "1min": float(one),
        "5min": float(five),
        "15min": float(fifteen),
        "runnable": int(running.split("/")[0]),
    }


def describe_machine() -> dict:
    """CPU model, usable cores, bf16-relevant flags, load, Python and torch versions."""
    cpu = _lscpu()
    flags = set(cpu.get("Flags", "").split())
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 1
    info = {
        "cpu": cpu.get("Model name") or platform.processor() or platform.machine(),
        "cores": usable,
        "threads_per_core": cpu.get("Thread(s) per core"),
        "hypervisor": cpu.get("Hypervisor vendor"),
        "bf16_flags": [f for f in BF16_FLAGS if f in flags],
        "loadavg": _loadavg(),
        "python": platform.python_version(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info
