"""BENCHMARKS.md from the JSON results in ``benchmarks/results/`` (``make bench`` writes both).

Every figure in the page comes from a results file, with the machine it was measured on and the
load at the time; nothing is typed by hand. Sections:

1. training loop vs a bare PyTorch loop, per architecture (``train_loop.json``);
2. the prepared array vs decoding PNGs with PIL every epoch (``data.json``, ``loader``);
3. ``prepare`` on 1024² PNGs: 1 process vs all cores, peak RSS at two sizes (``data.json``);
4. scoring throughput per architecture (``score.json``) and fetch (synthetic) images/s;
5. ``make repro`` by stage (every ``repro*.json``, from ``benchmarks/repro_stages.py``);
6. a projection for the full NIH set from the measured per-image costs (``train_*.json`` of
   ``benchmarks/train_throughput.py`` at 128² and 256², and ``--preset paper`` on a GPU).

    python benchmarks/report.py                                  # results/ -> BENCHMARKS.md
    python benchmarks/report.py --results DIR --out PATH
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NIH_TRAIN, NIH_TEST = 60_361, 25_596  # films: train_val_list.txt and test_list.txt
PROJECTION_SIZES = (128, 256)


def load_results(folder: Path) -> dict[str, dict]:
    """Every ``*.json`` in ``folder`` by file stem."""
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _f(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def _hms(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h else f"{m} min {s:02d} s"


def describe(machine: dict) -> str:
    """One line: CPU, cores, bf16 flags, torch, and the load when the run began."""
    load = machine.get("loadavg") or {}
    busy = load.get("1min", 0) > machine.get("cores", 1)
    flags = ", ".join(machine.get("bf16_flags") or []) or "none"
    text = (
        f"{machine.get('cpu')}, {machine.get('cores')} usable cores "
        f"({machine.get('hypervisor') or 'bare metal'} guest), bf16 CPU flags: {flags}, "
        f"torch {machine.get('torch')} ({machine.get('torch_threads')} threads)"
    )
    if machine.get("cuda"):
        text += f", GPU {machine['cuda']}"
    if load:
        text += f"; load average {load['1min']:.1f} at the start"
        text += " (**shared: other jobs were running**)" if busy else " (quiet)"
    return text


def section_loop(res: dict | None) -> list[str]:
    out = ["## 1. Training loop vs a bare PyTorch loop", ""]
    if res is None:
        return out + ["Not measured (no `train_loop.json`).", ""]
    out += [
        f"Measured on: {describe(res['machine'])}.", "",
        "Interleaved in one process, median of the rounds: the project's loop (`train_model`: "
        "one epoch from a uint8 array, shuffling, conversion, schedule, checks) against "
        "`model.training_step` on float tensors made beforehand, both in the precision the "
        "loop decides on (the device column). *bare, contiguous* is the bare loop without "
        "channels-last, *bare, fp32* / *bare, bf16* the bare loop in the other precision "
        "(`train.cpu_bf16`): the two settings `imgae_dx.device` decides on (ratios < 1: "
        "slower than the loop's setting).", "",
    ]  # fmt: skip
    rows = [
        [
            r["arch"], str(r["image_size"]), str(r["batch_size"]),
            _f(r["loop_images_per_s"]), _f(r["bare_images_per_s"]),
            f"{r['loop_over_bare']:.2f}",
            f"{r['bare_contiguous_over_bare']:.2f}" if "bare_contiguous_over_bare" in r else "–",
            f"{r['bare_fp32_over_bare']:.2f}" if "bare_fp32_over_bare" in r else "–",
            f"{r['bare_bf16_over_bare']:.2f}" if "bare_bf16_over_bare" in r else "–",
            r.get("device", "–"),
        ]
        for r in res["rows"]
    ]  # fmt: skip
    header = ["arch", "size", "batch", "loop img/s", "bare img/s", "loop / bare",
              "bare, contiguous / bare", "bare, fp32 / bare", "bare, bf16 / bare",
              "device"]  # fmt: skip
    return out + _table(header, rows) + [""]


def section_loader(res: dict | None) -> list[str]:
    out = ["## 2. Prepared array vs decoding PNGs every epoch", ""]
    if res is None:
        return out + ["Not measured (no `data.json`).", ""]
    ld = res["loader"]
    out += [
        f"Measured on: {describe(res['machine'])}.", "",
        f"One epoch's batches ({ld['n_images']} images, {ld['png_size']}² PNGs -> "
        f"{ld['image_size']}², batch {ld['batch_size']}, shuffled, as float tensors), "
        f"{ld['repeats']} interleaved rounds, median:", "",
    ]  # fmt: skip
    rows = [
        ["prepared `.npy` (the design)", _f(ld["array_images_per_s"], 0)],
        ["PIL decode + resize every epoch", _f(ld["pil_images_per_s"], 0)],
        ["**ratio**", f"**{ld['array_over_pil']:,.0f}x**"],
    ]
    out += _table(["loader", "images/s"], rows)
    out += [
        "",
        f"The one-off cost: `prepare` of the same images took {ld['prepare_once_s']:.1f} s.",
        "",
    ]
    return out


def section_prepare(res: dict | None) -> list[str]:
    out = ["## 3. `prepare` on 1024² PNGs", ""]
    if res is None:
        return out + ["Not measured (no `data.json`).", ""]
    pr = res["prepare"]
    out += [
        f"Measured on: {describe(res['machine'])}.", "",
        f"{pr['n_images']} PNGs of {pr['png_size']}² to {pr['image_size']}², each run in a "
        "fresh process, 1 process and all cores interleaved (median):", "",
    ]  # fmt: skip
    out += _table(
        ["processes", "images/s"],
        [
            ["1", _f(pr["one_process_images_per_s"])],
            [str(pr["cores"]), _f(pr["all_cores_images_per_s"])],
            ["**scaling**", f"**{pr['scaling']:.2f}x** on {pr['cores']} cores"],
        ],
    )
    rows = [
        [str(r["n_images"]), str(r["workers"]), _f(r["peak_rss_mib"], 0),
         _f(r["peak_worker_rss_mib"], 0)]
        for r in pr["rss"]
    ]  # fmt: skip
    out += ["", "Peak resident memory (the array is written through a memory map, so it must "
            "not grow with the number of images):", ""]  # fmt: skip
    return out + _table(["images", "workers", "stage MiB", "largest worker MiB"], rows) + [""]


def section_score(score: dict | None, data: dict | None) -> list[str]:
    out = ["## 4. Scoring and fetch throughput", ""]
    if score is not None:
        out += [f"Scoring, measured on: {describe(score['machine'])}.", ""]
        rows = [
            [r["arch"], str(r["image_size"]), f"`{r['map']}`", _f(r["images_per_s"])]
            for r in score["rows"]
        ]
        out += _table(["arch", "size", "map", "images/s"], rows) + [""]
    else:
        out += ["Scoring: not measured (no `score.json`).", ""]
    if data is not None:
        fe = data["fetch"]
        out += [
            f"Fetch (synthetic, 256² PNGs, all cores): {fe['n_images']} images in "
            f"{fe['seconds']:.1f} s = **{fe['images_per_s']:.1f} images/s** "
            f"(measured on: {describe(data['machine'])}).",
            "",
        ]
    return out


def section_repro(runs: dict[str, dict]) -> list[str]:
    out = ["## 5. `make repro` by stage", ""]
    if not runs:
        return out + ["Not measured (no `repro*.json`).", ""]
    out += [
        "Each column is one timed run (`benchmarks/repro_stages.py`: from one `Running stage` "
        "line of `dvc repro` to the next); a stage a run skipped as unchanged is blank. Runs on "
        "a shared machine are slower by the load shown, whatever the code.",
        "",
    ]
    names = list(runs)
    for key, run in runs.items():
        where = describe(run["machine"]) if isinstance(run["machine"], dict) else run["machine"]
        out.append(f"- **{key}**: {run['label']}; `{run['command']}`; {where}.")
    stages: list[str] = []
    for run in runs.values():
        stages += [s["stage"] for s in run["stages"] if s["stage"] not in stages]
    rows = []
    for stage in stages:
        cells = []
        for key in names:
            found = [s["seconds"] for s in runs[key]["stages"] if s["stage"] == stage]
            cells.append(_f(found[0]) if found else "")
        rows.append([stage, *cells])
    rows.append(["**total**", *[f"**{_hms(runs[k]['total_s'])}**" for k in names]])
    return out + [""] + _table(["stage (s)", *names], rows) + [""]


def section_channels_last(before: dict | None, loop: dict | None) -> list[str]:
    """The training stages of the recorded run divided by section 1's channels-last speed-up:
    a projection, not a timed run (the loop's other costs are the same either way)."""
    if before is None or loop is None:
        return []
    gain = {
        r["arch"]: 1.0 / r["bare_contiguous_over_bare"]
        for r in loop["rows"]
        if r.get("bare_contiguous_over_bare")
    }
    rows = []
    for st in before["stages"]:
        arch = st["stage"].removeprefix("train@")
        if st["stage"].startswith("train@") and arch in gain:
            new = st["seconds"] / gain[arch]
            rows.append([st["stage"], _f(st["seconds"]), f"{gain[arch]:.2f}", _f(new),
                         _f(st["seconds"] - new)])  # fmt: skip
    if not rows:
        return []
    saved = sum(float(r[4].replace(",", "")) for r in rows)
    out = [
        "Projected effect of channels-last on the CPU (now the default) on the training "
        "stages of `repro_before`: its seconds divided by the speed-up measured in section 1 "
        "(bare loop, contiguous vs channels-last, interleaved). A projection, not a timed run.",
        "",
    ]
    header = ["stage", "before (s)", "channels-last speed-up", "projected (s)", "saved (s)"]
    return out + _table(header, rows) + ["", f"Saved in all: about {saved:.0f} s.", ""]


def _epochs(arch: str, preset: str) -> int:
    from imgae_dx.config import load_params

    overlay = ROOT / "configs" / "paper.yaml" if preset == "paper" else None
    return load_params(ROOT / "params.yaml", overlay=overlay).train_for(arch).epochs


def projection_rows(results: dict[str, dict]) -> list[list[str]]:
    """One row per (device, preset, size, arch) measured: the arithmetic written out."""
    score = {
        (r["arch"], r["image_size"]): r["images_per_s"]
        for r in (results.get("score") or {}).get("rows", [])
    }
    rows = []
    for res in results.values():
        if not res.get("kind", "").startswith("train_") or res["kind"] == "train_loop":
            continue
        preset = res["settings"].get("preset", "default")
        for r in res["rows"]:
            if r["image_size"] not in PROJECTION_SIZES:
                continue
            rate, epochs = r["images_per_s"], _epochs(r["arch"], preset)
            epoch_s = NIH_TRAIN / rate
            on_cpu = r["device"].startswith("cpu")
            s_rate = score.get((r["arch"], r["image_size"])) if on_cpu else None
            s_text = (
                f"{NIH_TEST:,} / {s_rate:.3g} = {_hms(NIH_TEST / s_rate)}"
                if s_rate
                else "not measured"
            )
            rows.append([
                r["device"], preset, str(r["image_size"]), r["arch"], str(r["batch_size"]),
                f"{NIH_TRAIN:,} / {rate:.3g} = {_hms(epoch_s)}",
                f"× {epochs} = **{_hms(epoch_s * epochs)}**", s_text,
            ])  # fmt: skip
    return rows


def section_projection(results: dict[str, dict]) -> list[str]:
    out = [
        "## 6. Projection: the full NIH set",
        "",
        f"{NIH_TRAIN:,} training films (train_val_list.txt) and {NIH_TEST:,} test films, from "
        "the measured training images/s (`benchmarks/train_throughput.py`, median step after "
        "a warm-up) and scoring images/s (section 4) at that size. Epochs: params.yaml's for "
        "the default preset (CPU-sized widths), configs/paper.yaml's for the paper preset; "
        "an early stop would end sooner. Validation passes are not counted.",
        "",
    ]
    header = ["device", "preset", "size", "arch", "batch", "one epoch", "all epochs",
              "scoring the test set"]  # fmt: skip
    rows = projection_rows(results)
    if not any(not r[0].startswith("cpu") for r in rows):
        rows.append(["one GPU", "paper", "128, 256", "all", "–", "not measured",
                     "not measured (no GPU here)", "not measured"])  # fmt: skip
    loads = []
    for key, res in results.items():
        if res.get("kind", "").startswith("train_") and res["kind"] != "train_loop":
            out.append(f"- `{key}.json`: {describe(res['machine'])}.")
            load = (res["machine"].get("loadavg") or {}).get("1min", 0.0)
            loads.append(load / max(1, res["machine"].get("cores") or 1))
    if loads and max(loads) > 1:
        out += ["", "**These per-image costs were measured while other jobs shared the CPU "
                f"(up to {max(loads):.0f} runnable jobs per core): the hours below are that "
                "much too long for a quiet machine. Rerun `make bench` on one before using "
                "them.**"]  # fmt: skip
    out += [
        "",
        "GPU rows come from `python benchmarks/train_throughput.py --preset paper --out "
        "benchmarks/results/train_paper_gpu.json` (and `--image-size 256 --out "
        "benchmarks/results/train_paper_gpu_256.json`) on a machine with one; "
        "`make bench` runs both when CUDA is available.",
        "",
    ]
    return out + _table(header, rows) + [""]


def render(results: dict[str, dict]) -> str:
    repro = {k: v for k, v in results.items() if k.startswith("repro")}
    data = results.get("data")
    quick = any((r.get("settings") or {}).get("quick") for r in results.values())
    lines = [
        "# Benchmarks",
        "",
        "Generated by `benchmarks/report.py` from `benchmarks/results/*.json` (`make bench`; "
        "`BENCH_QUICK=1 make bench` for a smoke run). Each section names the machine and the "
        "load it was measured under. The machine is shared with other jobs at times: the "
        "**ratios**, measured interleaved in one process, are the figures to trust; absolute "
        "images/s and seconds hold for the load shown.",
        "",
    ]
    if quick:
        lines += ["**Smoke run (BENCH_QUICK=1): sizes too small for the figures to mean much.**",
                  ""]  # fmt: skip
    lines += section_loop(results.get("train_loop"))
    lines += section_loader(data)
    lines += section_prepare(data)
    lines += section_score(results.get("score"), data)
    lines += section_repro(repro)
    lines += section_channels_last(results.get("repro_before"), results.get("train_loop"))
    lines += section_projection(results)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--out", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args()
    args.out.write_text(render(load_results(args.results)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
