"""The locked environment pins every dependency pyproject.toml declares (torch aside)."""

from __future__ import annotations

import re

import tomllib

from tests.conftest import REPO


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_every_declared_dependency_is_pinned_in_the_lock():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {
        _name(d)
        for d in project["dependencies"] + project["optional-dependencies"]["dev"]
        if _name(d) != "torch"  # TORCH_SPEC decides it (a CUDA workstation keeps its own build)
    }
    pinned = {
        _name(line)
        for line in (REPO / "requirements.lock").read_text().splitlines()
        if "==" in line and not line.startswith((" ", "#"))
    }
    assert declared <= pinned, f"run `make lock`: {sorted(declared - pinned)} not in the lock"
    assert "torch" not in pinned
