"""The benchmark tooling: BENCHMARKS.md's generator, the repro stage timer, and a smoke run of
each benchmark at minimal size (what they measure is not asserted: no timed assertions)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))

import report  # noqa: E402
import repro_stages  # noqa: E402

MACHINE = {
    "cpu": "Test CPU", "cores": 2, "hypervisor": None, "bf16_flags": ["avx512_bf16"],
    "loadavg": {"1min": 7.5, "5min": 7.0, "15min": 6.0, "runnable": 9},
    "torch": "2.x", "torch_threads": 2, "cuda": None,
}  # fmt: skip


def tiny_results() -> dict[str, dict]:
    loop = {
        "arch": "ra", "image_size": 64, "batch_size": 16, "steps": 8, "device": "cpu (2 threads)",
        "loop_images_per_s": 98.0, "bare_images_per_s": 100.0, "loop_over_bare": 0.98,
        "bare_contiguous_images_per_s": 80.0, "bare_contiguous_over_bare": 0.8,
        "bare_bf16_images_per_s": 120.0, "bare_bf16_over_bare": 1.2,
    }  # fmt: skip
    data = {
        "kind": "data", "machine": MACHINE, "settings": {"quick": False},
        "fetch": {"n_images": 100, "seconds": 4.0, "images_per_s": 25.0},
        "loader": {"n_images": 640, "png_size": 256, "image_size": 64, "batch_size": 64,
                   "repeats": 3, "array_images_per_s": 50000.0, "pil_images_per_s": 500.0,
                   "array_over_pil": 100.0, "prepare_once_s": 2.0},
        "prepare": {"png_size": 1024, "image_size": 64, "cores": 2, "n_images": 384,
                    "one_process_images_per_s": 40.0, "all_cores_images_per_s": 76.0,
                    "scaling": 1.9, "rss": [
                        {"n_images": 96, "workers": 2, "peak_rss_mib": 300.0,
                         "peak_worker_rss_mib": 280.0},
                        {"n_images": 384, "workers": 2, "peak_rss_mib": 301.0,
                         "peak_worker_rss_mib": 281.0}]},
    }  # fmt: skip
    score_rows = [{"arch": "ra", "image_size": s, "map": "ra", "n_images": 8,
                   "images_per_s": 200.0} for s in (64, 128)]  # fmt: skip
    train_128 = [{"arch": "ra", "image_size": 128, "batch_size": 16, "device": "cpu (2 threads)",
                  "images_per_s": 100.0}]  # fmt: skip
    repro = {
        "label": "after", "command": "dvc repro", "machine": MACHINE, "total_s": 290.0,
        "exit_code": 0, "stages": [{"stage": "train@ra", "seconds": 120.0}],
    }  # fmt: skip
    return {
        "train_loop": {"kind": "train_loop", "machine": MACHINE, "settings": {}, "rows": [loop]},
        "data": data,
        "score": {"kind": "score", "machine": MACHINE, "settings": {}, "rows": score_rows},
        "train_cpu_128": {"kind": "train_default", "machine": MACHINE,
                          "settings": {"preset": "default"}, "rows": train_128},
        "repro_after": repro,
        "repro_before": {**repro, "label": "before", "machine": "quiet", "total_s": 382.0,
                         "stages": [{"stage": "train@ra", "seconds": 150.0}]},
    }  # fmt: skip


def test_report_has_every_section_from_the_results(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for name, doc in tiny_results().items():
        (results / f"{name}.json").write_text(json.dumps(doc))
    text = report.render(report.load_results(results))
    for n in range(1, 7):
        assert f"\n## {n}. " in text
    assert "| ra | 64 | 16 | 98.0 | 100.0 | 0.98 | 0.80 | – | 1.20 |" in text  # section 1
    assert "**100x**" in text and "**1.90x** on 2 cores" in text  # sections 2 and 3
    assert "| 96 | 2 | 300 | 280 |" in text and "**25.0 images/s**" in text  # 3 and 4
    assert "| train@ra | 120.0 | 150.0 |" in text and "**4 min 50 s**" in text  # section 5
    # the recorded run's RA stage over section 1's channels-last gain (1 / 0.8)
    assert "| train@ra | 150.0 | 1.25 | 120.0 | 30.0 |" in text
    # section 6: the arithmetic, the params.yaml epochs of the RA, and the GPU rows
    epochs = report._epochs("ra", "default")
    assert f"60,361 / 100 = 10 min 04 s | × {epochs} = " in text
    assert "25,596 / 200 = 2 min 08 s" in text
    assert "runnable jobs per core" in text  # the load of the tiny results (7.5 on 2 cores)
    assert "not measured (no GPU here)" in text
    assert "load average 7.5" in text and "other jobs were running" in text


def test_report_names_what_is_missing() -> None:
    text = report.render({})
    assert text.count("Not measured") >= 4 and "not measured (no GPU here)" in text


def test_stage_times_charges_each_stage_up_to_the_next() -> None:
    lines = [(0.0, ""), (1.5, "Running stage 'fetch':\n"), (2.0, "> python stages/fetch.py\n"),
             (11.5, "Running stage 'train@ra':\n"), (12.0, "Updating lock file\n")]  # fmt: skip
    rows = repro_stages.stage_times(lines, end=40.0)
    assert rows == [
        {"stage": "dvc (planning)", "seconds": 1.5},
        {"stage": "fetch", "seconds": 10.0},
        {"stage": "train@ra", "seconds": 28.5},
    ]
    assert repro_stages.stage_times([], end=1.0) == []
    # `make repro` (--make): the time up to the environment's last line is `make env`'s
    make = [(0.0, ""), (20.0, ">> environment ready: torch 2.13.0+cpu\n"), (21.0, "dvc repro\n"),
            (23.0, "Running stage 'check':\n")]  # fmt: skip
    assert repro_stages.stage_times(make, end=25.0) == [
        {"stage": "make env", "seconds": 20.0},
        {"stage": "dvc (planning)", "seconds": 3.0},
        {"stage": "check", "seconds": 2.0},
    ]


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "MPLBACKEND": "Agg"}
    return subprocess.run(
        [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True
    )


def test_repro_stages_times_a_dvc_run(tmp_path: Path) -> None:
    fake = tmp_path / "dvc"
    fake.write_text("#!/bin/sh\necho \"Running stage 'a':\"\necho \"Running stage 'b':\"\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "repro.json"
    args = [str(BENCH / "repro_stages.py"), "--workspace", str(tmp_path), "--dvc", str(fake)]
    proc = _run([*args, "--out", str(out), "--", "--force"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert [s["stage"] for s in doc["stages"]] == ["dvc (planning)", "a", "b"]
    assert doc["command"] == "dvc repro --force" and doc["machine"]["cores"] >= 1


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        [
            "train_throughput.py",
            "--compare-loop",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--image-size",
            "32",
            "--models",
            "ae",
        ],
        [
            "train_throughput.py",
            "--preset",
            "paper",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--batch-size",
            "2",
            "--image-size",
            "32",
            "--models",
            "ae",
            "ra",
        ],
        ["data_throughput.py", "--quick"],
        [
            "score_throughput.py",
            "--sizes",
            "32",
            "--n-images",
            "4",
            "--repeats",
            "1",
            "--models",
            "ae",
            "ra",
        ],
    ],  # fmt: skip
    ids=["train-loop", "train-paper", "data", "score"],
)
def test_benchmark_smoke(args: list[str], tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = _run([str(BENCH / args[0]), *args[1:], "--out", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["machine"]["cores"] >= 1 and doc["kind"]
    rows = doc.get("rows") or [doc["loader"], doc["prepare"]]
    assert rows and all(v is not None for r in rows for v in r.values())
