from __future__ import annotations

import sqlite3

from imgae_dx import tracking
from imgae_dx.paths import repo_root
from tests.conftest import make_params


def test_repo_root_inside_a_queued_experiment_copy(tmp_path):
    run_dir = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    run_dir.mkdir(parents=True)
    assert repo_root(run_dir) == tmp_path / "repo"


def test_default_uri_is_absolute_sqlite_in_the_repo(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    uri = tracking.tracking_uri()
    assert uri == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_run_logs_stage_tags_params_and_metrics_without_secrets(monkeypatch, tmp_path):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setenv("DVC_EXP_NAME", "exp-x")
    params = make_params(mlflow={"enabled": True, "experiment": "t"})
    with tracking.start_run("train@ae", params) as run:
        assert run.active
        run.log_params({"train": {"lr": 0.001}, "kaggle": {"api_token": "SECRET123"}})
        run.log_metrics({"auroc": 0.7, "ci": [0.6, 0.8], "nan": float("nan")}, step=1)
    con = sqlite3.connect(db)
    tags = dict(con.execute("select key, value from tags"))
    params_logged = dict(con.execute("select key, value from params"))
    metrics = {r[0] for r in con.execute("select key from metrics")}
    con.close()
    assert tags["dvc.stage"] == "train@ae" and tags["dvc.exp_name"] == "exp-x"
    assert params_logged["train.lr"] == "0.001"
    assert "SECRET123" not in str(params_logged)
    assert metrics == {"auroc"}


def test_disabled_tracking_writes_nothing(monkeypatch, tmp_path):
    db = tmp_path / "m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    with tracking.start_run("report", make_params(mlflow={"enabled": False})) as run:
        assert not run.active
        run.log_metrics({"auroc": 0.5})
    assert not db.exists()
