"""A new user's mistakes and the faults of a real machine, through the real commands.

One tiny pipeline is reproduced once; then each case below makes its mistake (or fault),
runs what a user would run (``dvc repro``, a stage script, ``imgae-dx``), undoes the mistake,
and says how it ended:

- ``clear``: the command failed with one ``error: ...`` line naming what to fix, and no
  traceback;
- ``recovered``: the fault was survived (or cleaned up) by the next run, or undone by the
  documented command (``dvc checkout``);
- ``repaired``: bad data was repaired and listed (``data/prepared/issues.csv``);
- ``excluded``: bad data was left out and listed;
- ``degraded``: an optional service failed fast, with one warning line, and the run finished.

After every case all outputs (data, models, reports) must be byte for byte what they were:
nothing produced is lost or half-written, and ``dvc status`` must say up to date (it is asked
whenever any file it reads differs from the up-to-date workspace's, and at the start and the
end). The tally is printed at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import copy_workspace, run_checked

OUTPUT_DIRS = ("data/split", "data/prepared", "data/raw", "models", "reports")


@dataclass
class Case:
    name: str
    run: Callable[[Path, dict], str]  # returns the outcome


def _outputs(ws: Path) -> dict[str, str]:
    out = {}
    for d in OUTPUT_DIRS:
        for p in sorted((ws / d).rglob("*")):
            if p.is_file() and ".resume" not in p.parts:
                out[str(p.relative_to(ws))] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


#: What ``dvc status`` never reads: git's files, DVC's cache and state, the MLflow store.
NOT_READ_BY_STATUS = (".git", ".dvc/tmp", ".dvc/cache", "mlruns", "mlflow-test.db")


def _fingerprint(ws: Path) -> dict[str, str]:
    """Every other file of the workspace (its path and md5): the whole of what decides
    ``dvc status``'s answer (dvc.yaml, dvc.lock, params, dependencies, outputs)."""
    out = {}
    for p in sorted(ws.rglob("*")):
        rel = p.relative_to(ws).as_posix()
        if p.is_file() and not rel.startswith(NOT_READ_BY_STATUS):
            out[rel] = hashlib.md5(p.read_bytes()).hexdigest()
    return out


def _assert_up_to_date(ws: Path, env: dict, when: str) -> None:
    status = run_checked([sys.executable, "-m", "dvc", "status"], ws, env).stdout
    assert "up to date" in status, (when, status)


def _cmd(ws: Path, env: dict, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        list(args), cwd=ws, env=env, capture_output=True, text=True, timeout=timeout
    )


def _clear(proc: subprocess.CompletedProcess, *expected: str) -> str:
    """The command failed with one ``error:`` line naming ``expected``, and no traceback."""
    text = proc.stdout + proc.stderr
    lines = [ln for ln in text.splitlines() if ln.startswith("error:") or ": error: " in ln]
    assert proc.returncode != 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert len(lines) == 1, text[-3000:]
    for e in expected:
        assert e in lines[0], (e, lines[0])
    return "clear"


def _dvc(ws: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return _cmd(ws, env, sys.executable, "-m", "dvc", *args)


def _params_mistake(edit: Callable[[dict], None], *expected: str) -> Callable:
    def run(ws: Path, env: dict) -> str:
        original = (ws / "params.yaml").read_text()
        params = yaml.safe_load(original)
        edit(params)
        (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        try:
            return _clear(_dvc(ws, env, "repro"), *expected)
        finally:
            (ws / "params.yaml").write_text(original)

    return run


def _set(path: str, value) -> Callable[[dict], None]:
    def edit(params: dict) -> None:
        *head, last = path.split(".")
        cur = params
        for k in head:
            cur = cur.setdefault(k, {})
        cur[last] = value

    return edit


def _bad_yaml(ws: Path, env: dict) -> str:
    original = (ws / "params.yaml").read_text()
    (ws / "params.yaml").write_text(original + "\ntrain: [unclosed\n")
    try:
        return _clear(_cmd(ws, env, sys.executable, "stages/check.py"), "params.yaml", "YAML")
    finally:
        (ws / "params.yaml").write_text(original)


def _truncated_checkpoint(ws: Path, env: dict) -> str:
    model = ws / "models/ae/seed0.pt"
    model.write_bytes(model.read_bytes()[:1000])
    proc = _cmd(ws, env, sys.executable, "stages/score.py", "ae", "0")
    _clear(proc, "models/ae/seed0.pt", "unreadable")
    run_checked([sys.executable, "-m", "dvc", "checkout", "--force", "models/ae/seed0.pt"], ws, env)
    return "recovered"


def _unlisted_architecture(ws: Path, env: dict) -> str:
    proc = _cmd(ws, env, sys.executable, "stages/train.py", "gan", "0")
    return _clear(proc, "'gan' is not listed")


def _metrics_file(content: str | None) -> Callable:
    def run(ws: Path, env: dict) -> str:
        path = ws / "broken.json"
        if content is not None:
            path.write_text(content)
        try:
            proc = _cmd(ws, env, "imgae-dx", "check-metrics", str(path), "reports/metrics.json")
            return _clear(proc, "broken.json")
        finally:
            path.unlink(missing_ok=True)

    return run


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _killed_leftovers(ws: Path, env: dict) -> str:
    """What SIGKILL leaves (a temporary model file, a half-built data/raw) goes at the next run
    of the stage that writes there."""
    dead = _dead_pid()
    tmp_model = ws / f"models/ae/.seed0.pt.{dead}.x1.pt.tmp"
    tmp_model.write_bytes(b"")
    tmp_raw = ws / f"data/.raw.{dead}.x2.tmp"
    (tmp_raw / "images_001").mkdir(parents=True)
    run_checked(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "fetch"], ws, env
    )
    run_checked(
        [sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "train@ae-0"], ws, env
    )
    assert not tmp_model.exists() and not tmp_raw.exists()
    return "recovered"


@contextlib.contextmanager
def _dropping_server() -> Iterator[tuple[int, list]]:
    """A tracking server going down: it accepts each connection and closes it at once, and
    lists them (each HTTP attempt opens one: a retry is another). Yields its port and list."""
    accepted: list = []
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        stop.set()
        thread.join()
        server.close()


def _dead_tracking_server(ws: Path, env: dict) -> str:
    with _dropping_server() as (port, connections):
        dead = {**env, "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}
        proc = _cmd(ws, dead, sys.executable, "stages/report.py", timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # One probe and no retry (before the store was probed, the stage waited out MLflow's).
    assert len(connections) == 1, connections
    warned = [ln for ln in proc.stderr.splitlines() if f"127.0.0.1:{port}" in ln]
    assert len(warned) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return "degraded"


def _bad_image(split: str, damage: str, action: str, problem: str) -> Callable:
    """A damaged image in data/raw is repaired or left out by prepare, and listed; the next
    fetch restores the mirror and prepare its arrays."""

    def run(ws: Path, env: dict) -> str:
        import pandas as pd
        from PIL import Image

        from imgae_dx.data import nih

        name = pd.read_csv(ws / f"data/split/{split}.csv")["image"].iloc[0]
        path = ws / "data/raw" / nih.image_relpath(name)
        if damage == "jpeg":
            with Image.open(path) as im:
                im.convert("L").save(path, format="JPEG")  # the name still says .png
        else:
            path.write_bytes(path.read_bytes()[:300])
        try:
            run_checked([sys.executable, "stages/prepare.py"], ws, env)
            issues = pd.read_csv(ws / "data/prepared/issues.csv")
            row = issues[issues["image"].astype(str).str.contains(name)]
            assert len(row) == 1, issues
            assert (row["action"].iloc[0], row["problem"].iloc[0]) == (action, problem), row
        finally:
            run_checked([sys.executable, "-m", "dvc", "repro", "-f", "-s", "fetch"], ws, env)
            run_checked([sys.executable, "stages/prepare.py"], ws, env)
        return action

    return run


CASES = [
    Case("unknown train key", _params_mistake(_set("train.epoch", 3), "train.epoch", "epochs")),
    Case(
        "unknown arch key",
        _params_mistake(_set("arch.ae.latent_dims", 8), "arch.ae.latent_dims", "latent_dim"),
    ),
    Case("text for a number", _params_mistake(_set("train.epochs", "ten"), "train.epochs")),
    Case("negative epochs", _params_mistake(_set("train.epochs", -1), "train.epochs", ">= 1")),
    Case("no models", _params_mistake(_set("models", []), "models")),
    Case("bad report unit", _params_mistake(_set("report.unit", "imag"), "report.unit")),
    Case("unknown top-level key", _params_mistake(_set("sed", 0), "sed", "'seed'")),
    Case("unknown data key", _params_mistake(_set("data.image_sise", 64), "data.image_sise")),
    Case("zero batch in an arch", _params_mistake(_set("arch.ra.batch_size", 0), "arch.ra")),
    Case("impossible constructor", _params_mistake(_set("arch.ae.dropout", 1.5), "arch.ae")),
    Case("image size", _params_mistake(_set("data.image_size", 60), "data.image_size")),
    Case(
        "missing local root",
        _params_mistake(
            lambda p: (_set("data.source", "local")(p), _set("data.local.root", "/nope")(p)),
            "data.local.root",
        ),
    ),
    Case(
        "lpips without weights",
        _params_mistake(_set("score.saliency", "lpips"), "score.lpips_weights"),
    ),
    Case("bad YAML", _bad_yaml),
    Case("truncated checkpoint", _truncated_checkpoint),
    Case("unlisted architecture", _unlisted_architecture),
    Case("missing metrics file", _metrics_file(None)),
    Case("malformed metrics file", _metrics_file("{not json")),
    Case("killed run's leftovers", _killed_leftovers),
    Case("dead tracking server", _dead_tracking_server),
    Case("JPEG behind .png", _bad_image("test", "jpeg", "repaired", "not a PNG")),
    Case("truncated PNG", _bad_image("train", "truncate", "excluded", "undecodable")),
]


@pytest.fixture(scope="module")
def reproduced(tiny_reproduced, tmp_path_factory):
    src, env, _ = tiny_reproduced
    ws = tmp_path_factory.mktemp("reliability")
    env = copy_workspace(src, ws, env)
    env.pop("IMGAE_DX_DEBUG", None)
    return ws, env


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_mistakes_cost_one_line_and_lose_nothing(reproduced, capsys):
    ws, env = reproduced
    before = _outputs(ws)
    _assert_up_to_date(ws, env, "before the first case")
    clean = _fingerprint(ws)
    tally: Counter[str] = Counter()
    asked = 0  # dvc status, after a case
    for case in CASES:
        outcome = case.run(ws, env)
        tally[outcome] += 1
        after = _outputs(ws)  # once per case (hashing every output per file took ~10 s)
        lost = {f for f, h in before.items() if after.get(f) != h}
        assert not lost, (case.name, sorted(lost)[:10])
        if _fingerprint(ws) != clean:  # else every file dvc status reads is as it was
            _assert_up_to_date(ws, env, case.name)
            asked += 1
    _assert_up_to_date(ws, env, "after the last case")
    with capsys.disabled():
        print(
            f"\nreliability: {len(CASES)} mistakes and faults tried: "
            + ", ".join(f"{n} {k}" for k, n in sorted(tally.items()))
            + f"; outputs lost: 0; dvc status asked after {asked} (files changed)"
        )
    assert sum(tally.values()) == len(CASES)
