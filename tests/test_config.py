"""params.yaml's schema: defaults, types, ranges and unknown keys, each error naming its key."""

from __future__ import annotations

import copy

import pytest
import yaml

from imgae_dx import config
from imgae_dx.config import ConfigError, load_params, validate
from tests.conftest import REPO, make_params

REPO_PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def _with(path: str, value):
    p = copy.deepcopy(REPO_PARAMS)
    cur = p
    *head, last = path.split(".")
    for k in head:
        cur = cur[k]
    cur[last] = value
    return p


def test_repository_params_and_presets_are_valid():
    params = validate(REPO_PARAMS)
    assert params.as_written() == REPO_PARAMS
    assert (
        load_params(REPO / "params.yaml", overlay=REPO / "configs/paper.yaml").data.image_size
        == 128
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("data.source", "s3", "data.source: unknown source 's3'"),
        ("data.image_size", 60, "data.image_size: expected a multiple of 16"),
        ("data.image_size", "64", "data.image_size: expected int, got '64'"),
        ("data.views", ["LAT"], "data.views[0]: unknown entry 'LAT'"),
        ("data.shards", ["images_099"], "data.shards: unknown shard 'images_099'"),
        ("data.val_fraction", 1.5, "data.val_fraction: expected a value < 1"),
        ("data.max_test_normal", -3, "data.max_test_normal: expected a value >= 1"),
        ("models", ["ae", "gan"], "models: unknown architecture 'gan'"),
        ("models", [], "models: expected a non-empty list"),
        ("arch.ae.latent_dims", 8, "arch.ae.latent_dims: unknown key (did you mean 'latent_dim'?)"),
        ("arch.unet.noise", "pink", "arch.unet.noise: unknown noise 'pink'"),
        ("arch.gan", {}, "arch.gan: unknown architecture"),
        ("train.epoch", 3, "train.epoch: unknown key (did you mean 'epochs'?)"),
        ("train.epochs", "ten", "train.epochs: expected int, got 'ten'"),
        ("train.epochs", -1, "train.epochs: expected a value >= 1"),
        ("train.device", "gpu", "train.device: unknown device 'gpu'"),
        ("data.synthetic", {"n_patient": 3}, "data.synthetic.n_patient: unknown key"),
        ("data.kaggle", {"tokn": "y"}, "data.kaggle.tokn: unknown key"),
        ("data.kaggle", {"dataset": "x"}, "data.kaggle.dataset: expected '<owner>/<dataset>'"),
        ("score.reduce", "p101", "score.reduce: expected 'mean', 'max' or a percentile"),
        ("data.shards", True, "data.shards: expected 'all' or a list"),
        ("data.shards", {}, "data.shards: expected 'all' or a list"),
        ("data.kaggle", {"endpoint": "ftp://x"}, "data.kaggle.endpoint: expected an http(s) URL"),
        ("train.lr", "1e-3", "train.lr: expected number, got '1e-3' (YAML reads 1e-3 as text"),
        ("arch.ae.batch_size", 0, "arch.ae.batch_size: expected a value >= 1, got 0"),
        ("arch.ae.lr", -1.0, "arch.ae.lr: expected a value >= 0"),
        ("arch.ae.channels", [], "arch.ae: channels must be a non-empty list"),
        ("arch.ae.dropout", 1.5, "arch.ae: dropout probability has to be between 0 and 1"),
        ("arch.unet.depth", -1, "arch.unet: depth, base_channels and max_channels must be >= 1"),
        ("report.unit", "imag", "report.unit: unknown unit 'imag'"),
        ("report.age_bands", [30, 0], "report.age_bands: expected >= 2 increasing edges"),
        ("mlflow", {"enable": True}, "mlflow.enable: unknown key (did you mean 'enabled'?)"),
        ("sed", 0, "sed: unknown key (did you mean 'seed'?)"),
        ("seed", 1.5, "seed: expected int, got 1.5"),
        ("seed", True, "seed: expected int, got True"),
    ],
)
def test_errors_name_the_offending_key(key, value, message):
    with pytest.raises(ConfigError) as err:
        validate(_with(key, value))
    assert str(err.value).startswith(f"params.yaml: {message}"), str(err.value)
    assert "\n" not in str(err.value)


def test_missing_keys_are_named():
    p = copy.deepcopy(REPO_PARAMS)
    del p["arch"]["vae"]
    with pytest.raises(ConfigError, match=r"arch\.vae: missing"):
        validate(p)
    del p["seed"]
    with pytest.raises(ConfigError, match="missing key 'seed'"):
        validate(p)


def test_lpips_saliency_needs_local_weights_only_where_an_ra_map_is_computed():
    with pytest.raises(ConfigError, match="score.saliency: 'lpips' needs score.lpips_weights"):
        validate(_with("score", {"saliency": "lpips"}))
    validate(_with("score", {"saliency": "lpips", "map": "sq"}))  # no RA map: nothing to load


def test_load_params_reports_bad_yaml_and_missing_files(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(f)
    with pytest.raises(ConfigError, match="nope.yaml: not found"):
        load_params(tmp_path / "nope.yaml")


def test_arch_training_overrides_are_split_from_constructor_kwargs():
    p = make_params(arch={"ae": {"latent_dim": 8, "lr": 5e-4, "epochs": 3}})
    assert p.model_args("ae")["latent_dim"] == 8 and p.model_args("ae")["image_size"] == 64
    assert "lr" not in p.model_args("ae")
    t = p.train_for("ae")
    assert t.lr == 5e-4 and t.epochs == 3
    assert p.train_for("vae").lr == REPO_PARAMS["train"]["lr"]
    assert "image_size" not in p.model_args("unet")  # fully convolutional: no image_size


def test_overrides_are_validated_and_as_written_survives_any_construction():
    p = make_params(arch={"ae": {"patience": None, "epochs": 3}})
    assert p.train_for("ae").patience is None and p.train_for("ae").epochs == 3
    from imgae_dx.config import Params

    direct = Params.model_validate(REPO_PARAMS)
    assert direct.as_written() == REPO_PARAMS


def test_overlay_replaces_leaves_and_lists():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 0}
    assert config.apply_overlay(base, {"a": {"c": [3]}}) == {"a": {"b": 1, "c": [3]}, "d": 0}
    assert base == {"a": {"b": 1, "c": [1, 2]}, "d": 0}  # not modified


def test_the_train_block_is_the_override_set_plus_global_keys():
    assert set(config.TRAIN_OVERRIDE_KEYS) | set(config.GLOBAL_TRAIN_KEYS) == set(
        config.TrainParams.model_fields
    )
