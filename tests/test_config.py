from __future__ import annotations

import copy

import pytest
import yaml

from imgae_dx import config
from imgae_dx.config import ConfigError, load_params, validate

REPO_PARAMS = yaml.safe_load(open(config.repo_root(__file__) / "params.yaml"))


def _with(path: str, value):
    p = copy.deepcopy(REPO_PARAMS)
    cur = p
    *head, last = path.split(".")
    for k in head:
        cur = cur[k]
    cur[last] = value
    return p


def test_repository_params_are_valid():
    validate(REPO_PARAMS)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.source", "s3", "data.source: unknown source 's3'"),
        ("data.image_size", 60, "data.image_size"),
        ("data.image_size", "64", "data.image_size: expected int"),
        ("data.views", ["LAT"], "data.views"),
        ("data.shards", ["images_099"], "data.shards"),
        ("data.val_fraction", 1.5, "data.val_fraction"),
        ("data.max_test_normal", -3, "data.max_test_normal"),
        ("models", ["ae", "gan"], "unknown architecture 'gan'"),
        ("arch.ae.latent_dims", 8, "arch.ae.latent_dims: unknown key"),
        ("train.epoch", 3, "train.epoch: unknown key"),
        ("data.synthetic", {"n_patient": 3}, "data.synthetic.n_patient: unknown key"),
        ("data.kaggle", {"dataset": "x", "tokn": "y"}, "data.kaggle.tokn: unknown key"),
        ("seed", 1.5, "seed: expected int"),
    ],
)
def test_errors_name_the_offending_key(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        validate(_with(key, value))


def test_missing_arch_block_is_named():
    p = copy.deepcopy(REPO_PARAMS)
    del p["arch"]["vae"]
    with pytest.raises(ConfigError, match=r"arch\.vae: missing"):
        validate(p)


def test_load_params_reports_bad_yaml(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f)


def test_arch_training_overrides_are_split_from_constructor_kwargs():
    p = _with("arch.ae", {"latent_dim": 8, "lr": 5e-4, "epochs": 3})
    assert config.model_args(p, "ae")["latent_dim"] == 8
    assert "lr" not in config.model_args(p, "ae")
    t = config.train_args(p, "ae")
    assert t["lr"] == 5e-4 and t["epochs"] == 3
    assert config.train_args(p, "vae")["lr"] == REPO_PARAMS["train"]["lr"]
