"""``imgae-dx select``: rank DVC experiments by validation-normal loss, never by a test metric.

Picking the experiment with the best test AUROC and then reporting that AUROC is selection on
the test set: with a dozen experiments the winner's test AUROC is biased upwards by the
luckiest draw of test noise, and its confidence interval no longer holds. The validation
*normals* are the only data the protocol lets choose (``docs/architecture.md``, "Protocol"):
the same loss already picks each model's checkpoint. So this ranks the experiments of
``dvc exp show --json`` by one architecture's selected validation loss (``<arch>.val_loss``
in ``reports/headline.json``) and names the one to ``dvc exp apply``; its test metrics are
then read once.

A validation loss compares experiments only where it measures the same thing: the same
validation images at the same size (``data.*``), and for ``unet`` the same noise (a denoising
loss). Experiments whose ``data`` block differs from the best one's are listed as not
comparable and never win.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from imgae_dx import paths
from imgae_dx.errors import UserError
from imgae_dx.report.serialize import headline_val_losses


@dataclass(frozen=True)
class Candidate:
    """One row of ``dvc exp show``: a baseline commit or an experiment on it."""

    name: str  # the experiment's name, or the baseline's branch/tag (or short rev)
    rev: str
    is_experiment: bool
    val_losses: dict[str, float | None]  # arch -> selected validation-normal loss
    data_params: dict[str, Any]  # params.yaml's data block


def exp_show_json(all_commits: bool = False) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of the current directory's repository."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    proc = subprocess.run(
        cmd + (["--all-commits"] if all_commits else []), capture_output=True, text=True
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"`dvc exp show --json` failed: {last} (run it in the repository root)")
    return json.loads(proc.stdout)


def _candidate(row: Mapping[str, Any], is_experiment: bool) -> Candidate | None:
    data = row.get("data") or {}
    headline = ((data.get("metrics") or {}).get(str(paths.HEADLINE)) or {}).get("data")
    if row.get("error") or not isinstance(headline, Mapping):
        return None
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    rev = str(row.get("rev", ""))
    return Candidate(
        name=row.get("name") or rev[:7],
        rev=rev,
        is_experiment=is_experiment,
        val_losses=headline_val_losses(headline),
        data_params=params.get("data") or {},
    )


def candidates(exp_show: list[Mapping[str, Any]]) -> Iterator[Candidate]:
    """Every baseline and experiment of ``dvc exp show --json`` with a headline (the
    uncommitted workspace, failed and unfinished experiments are left out)."""
    for row in exp_show:
        if row.get("rev") == "workspace":
            continue
        if (c := _candidate(row, False)) is not None:
            yield c
        for exp in row.get("experiments") or []:
            revs = exp.get("revs") or []
            if revs and (c := _candidate(revs[0], True)) is not None:
                yield c


@dataclass(frozen=True)
class Ranking:
    arch: str
    ranked: list[tuple[Candidate, float]]  # comparable, best (lowest loss) first
    not_comparable: list[Candidate]  # another data block than the best


def rank(cands: list[Candidate], arch: str) -> Ranking:
    """``cands`` with a validation loss for ``arch``, lowest first (ties: by name)."""
    scored = sorted(
        ((c, c.val_losses[arch]) for c in cands if c.val_losses.get(arch) is not None),
        key=lambda cv: (cv[1], cv[0].name),
    )
    if not scored:
        return Ranking(arch, [], [])
    ref = scored[0][0].data_params
    same = [(c, v) for c, v in scored if c.data_params == ref]
    return Ranking(arch, same, [c for c, _ in scored if c.data_params != ref])


def format_ranking(r: Ranking) -> list[str]:
    """The lines ``imgae-dx select`` prints for one architecture."""
    lines = [f"{r.arch}: experiments by validation-normal loss (lower is better)"]
    for i, (c, v) in enumerate(r.ranked, 1):
        kind = "" if c.is_experiment else "  (baseline commit)"
        lines.append(f"  {i:2d}. {c.name:24s} {v:<10.6g} {c.rev[:7]}{kind}")
    for c in r.not_comparable:
        lines.append(f"   -  {c.name:24s} not comparable: its data.* params differ")
    best = r.ranked[0][0]
    if best.is_experiment:
        lines.append(f"  best: {best.name} -> dvc exp apply {best.name}")
    else:
        lines.append(f"  best: the baseline commit {best.name} (no experiment beats it)")
    return lines


def select(exp_show: list[Mapping[str, Any]], archs: list[str] | None = None) -> list[str]:
    """The printed ranking of every architecture in ``archs`` (default: every one with a
    validation loss in some experiment)."""
    cands = list(candidates(exp_show))
    if not cands:
        raise UserError(
            f"no experiment with {paths.HEADLINE} found in `dvc exp show` "
            "(run `dvc repro` or `dvc exp run` first)"
        )
    known = sorted({a for c in cands for a in c.val_losses})
    for a in archs or []:
        if a not in known:
            raise UserError(f"--arch {a}: no experiment has a validation loss for it ({known})")
    lines: list[str] = []
    for a in archs or known:
        lines += format_ranking(rank(cands, a))
    return lines
