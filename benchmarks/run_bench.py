"""``make bench``: run every benchmark, write ``benchmarks/results/*.json``, then BENCHMARKS.md.

    python benchmarks/run_bench.py            # the full set (about 10 min on 2 quiet cores)
    python benchmarks/run_bench.py --quick    # a smoke run at minimal sizes (BENCH_QUICK=1),
                                              # into .bench-quick/ (the committed results stay)

The timed ``make repro`` by stage is not rerun here (it takes the pipeline's minutes and must
start from a fresh clone): ``benchmarks/repro_stages.py --workspace <clone> --out
benchmarks/results/repro_<label>.json`` adds a run, and the next report includes it. On a
machine with CUDA the paper preset is measured too (section 6's GPU rows).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def commands(out: Path, quick: bool, cuda: bool) -> list[list[str]]:
    """The benchmark command lines, each writing one JSON file into ``out``."""
    tt = [str(HERE / "train_throughput.py")]
    if quick:
        runs = [
            [*tt, "--compare-loop", "--steps", "1", "--repeats", "1", "--image-size", "32",
             "--models", "ae", "ra", "--out", str(out / "train_loop.json")],
            [str(HERE / "data_throughput.py"), "--quick", "--out", str(out / "data.json")],
            [str(HERE / "score_throughput.py"), "--sizes", "128", "--n-images", "4",
             "--repeats", "1", "--out", str(out / "score.json")],
            [*tt, "--image-size", "128", "--steps", "1", "--warmup", "0", "--models", "ae",
             "--out", str(out / "train_cpu_128.json")],
        ]  # fmt: skip
    else:
        runs = [
            [*tt, "--compare-loop", "--steps", "8", "--repeats", "3",
             "--out", str(out / "train_loop.json")],
            [str(HERE / "data_throughput.py"), "--out", str(out / "data.json")],
            [str(HERE / "score_throughput.py"), "--sizes", "64", "128", "256", "--n-images",
             "128", "--repeats", "2", "--out", str(out / "score.json")],
        ]  # fmt: skip
        for size in (128, 256):
            runs.append([*tt, "--image-size", str(size), "--steps", "3", "--warmup", "1",
                         "--device", "cpu", "--out", str(out / f"train_cpu_{size}.json")])  # fmt: skip
    if cuda:
        runs.append([*tt, "--preset", "paper", "--out", str(out / "train_paper_gpu.json")])
        runs.append([*tt, "--preset", "paper", "--image-size", "256",
                     "--out", str(out / "train_paper_gpu_256.json")])  # fmt: skip
    return [[sys.executable, *r] for r in runs]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="smoke run at minimal sizes")
    args = ap.parse_args()
    import torch

    out = ROOT / (".bench-quick" if args.quick else "benchmarks/results")
    out.mkdir(parents=True, exist_ok=True)
    if args.quick:  # a smoke run also checks that the committed repro records render
        for p in (ROOT / "benchmarks" / "results").glob("repro*.json"):
            shutil.copy(p, out / p.name)
    for cmd in commands(out, args.quick, torch.cuda.is_available()):
        t0 = time.perf_counter()
        print(">>", " ".join(Path(c).name if c.startswith("/") else c for c in cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        print(f"   {time.perf_counter() - t0:.0f} s", flush=True)
    md = out / "BENCHMARKS.md" if args.quick else ROOT / "BENCHMARKS.md"
    subprocess.run(
        [sys.executable, str(HERE / "report.py"), "--results", str(out), "--out", str(md)],
        check=True,
    )


if __name__ == "__main__":
    main()
