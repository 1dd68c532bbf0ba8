"""params.yaml: one typed schema, loaded once through :func:`load_params`.

Every block of ``params.yaml`` is a pydantic model below: its defaults, types, ranges and
allowed keys live here and nowhere else (``docs/architecture.md``, "Parameters"). The
``train``, ``score``, ``report``, ``mlflow`` and ``data.*`` blocks are the models
:class:`TrainParams`, :class:`ScoreParams`, :class:`ReportParams`, :class:`MlflowParams`,
:class:`DataParams`, :class:`SyntheticParams`, :class:`KaggleParams`, :class:`LocalParams` and
:class:`MedianomalyParams`,
which the library functions take as they are. One block is derived rather than written out, so
that it cannot drift from the code that receives it: ``arch.<name>`` holds the keyword
arguments of the registered model's constructor (:mod:`imgae_dx.models.registry`; types from
its annotations, ranges from the constructor itself, which is run once on torch's ``meta``
device at load time), plus any ``train`` key of :data:`TRAIN_OVERRIDE_KEYS` to override for
that architecture alone. Value sets owned by the code that implements them (anomaly maps,
saliencies, the ``reduce`` syntax, device specs) are imported from there.

Validation is strict (``"64"`` is not an int, ``true`` is not a number) and every error is one
:class:`ConfigError` naming the key, e.g.
``params.yaml: arch.ae.latent_dims: unknown key (did you mean 'latent_dim'?) (...)``.
"""

from __future__ import annotations

import copy
import difflib
import os
import typing
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidatorFunctionWrapHandler,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from imgae_dx import scoring
from imgae_dx.data import nih
from imgae_dx.errors import UserError

PARAMS_FILE = "params.yaml"

PositiveInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, lt=1)]
Probability = Annotated[float, Field(ge=0, le=1)]
OpenUnit = Annotated[float, Field(gt=0, lt=1)]


class ConfigError(UserError, ValueError):
    """A parameter is missing, unknown or invalid; the message names the key and the fix."""


def _custom(message: str) -> PydanticCustomError:
    """A validation error whose text is ``message`` verbatim (it names the key itself)."""
    return PydanticCustomError("imgae_dx", "{message}", {"message": message})


class _Block(BaseModel):
    """A params block: unknown keys are errors, types are strict, values never change."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# ---- data ----------------------------------------------------------------------------------------
class SyntheticParams(_Block):
    """``data.synthetic``: the NIH-format phantom dataset (:func:`...sources.synthetic.generate`)."""

    n_patients: Annotated[int, Field(ge=1, le=nih.N_PATIENTS)] = 1900  # IDs over 1..30805
    image_size: Annotated[int, Field(ge=32)] = 256  # PNG side (the real files are 1024²)
    seed: int = 0
    prevalence: OpenUnit = 0.47  # fraction of images with at least one finding
    difficulty: Probability = 0.35  # 0 = lesions mostly obvious .. 1 = mostly subtle
    test_fraction: OpenUnit = 0.2  # fraction of patients in test_list.txt
    followups: Annotated[float, Field(ge=1)] = 3.4  # mean images per patient (NIH: 3.6)
    workers: PositiveInt | None = None  # rendering processes; None: all usable cores


class KaggleParams(_Block):
    """``data.kaggle``: the Kaggle mirror (:func:`...sources.kaggle.fetch`). Never credentials."""

    dataset: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$", description="'<owner>/<dataset>'"
        ),
    ] = "nih-chest-xrays/data"
    # API base URL override (mirrors, tests); None: Kaggle's
    endpoint: str | None = Field(None, pattern=r"^https?://.+", description="an http(s) URL")
    version: PositiveInt | None = None  # dataset version; None: latest
    method: Literal["auto", "zip", "files"] = "auto"
    workers: PositiveInt = 4  # concurrent transfers
    files_max: NonNegInt = 50  # `auto` downloads one by one up to this many images
    max_retries: NonNegInt = 8
    max_backoff: NonNegFloat = 60.0  # seconds
    timeout: Annotated[float, Field(gt=0)] = 60.0  # seconds per read


class LocalParams(_Block):
    """``data.local``: an NIH download already on disk (:func:`...sources.local.fetch`)."""

    root: str | None = None  # Kaggle layout or official archives
    link: Literal["auto", "hardlink", "reflink", "copy"] = "auto"


class MedianomalyParams(_Block):
    """``data.medianomaly``: MedIAnomaly's RSNA or VinDr-CXR split on disk
    (:func:`...sources.medianomaly.fetch`): ``<root>/data.json`` and ``<root>/images/``."""

    root: str | None = None  # e.g. ~/MedIAnomaly-Data/RSNA or ~/MedIAnomaly-Data/VinCXR
    link: Literal["auto", "hardlink", "reflink", "copy"] = "auto"


class DataParams(_Block):
    """``data``: where the images come from and how they are split and sized.

    With ``source: medianomaly`` the listing decides train and test: ``shards``, ``views``
    and ``test_fraction`` do not apply (that data has no shards, views or patients) and
    ``val_fraction`` is a fraction of the training images."""

    source: Literal["synthetic", "kaggle", "local", "medianomaly"]
    shards: str | list[str | int]  # 'all' or a list of images_001 .. images_012
    views: list[Literal["PA", "AP"]]
    image_size: int  # pixels fed to the models: a multiple of 16
    val_fraction: Fraction  # of training patients, normals only (label-free model selection)
    test_fraction: Fraction  # of patients, only when the mirror has no test_list.txt
    max_train: PositiveInt | None = None  # caps (images, sampled with `seed`); None: no cap
    max_val: PositiveInt | None = None
    max_test_normal: PositiveInt | None = None
    max_test_abnormal: PositiveInt | None = None
    # split and prepare fail when they exclude more than this fraction of what they read
    # (malformed metadata rows; missing or undecodable images): docs/architecture.md, "Bad data"
    max_bad_fraction: Probability = 0.01
    kaggle: KaggleParams = KaggleParams()
    local: LocalParams = LocalParams()
    synthetic: SyntheticParams = SyntheticParams()
    medianomaly: MedianomalyParams = MedianomalyParams()

    @field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, v: Any) -> Any:
        if not isinstance(v, str | list):
            raise _custom(
                f"data.shards: expected 'all' or a list such as [images_001, images_002], got {v!r}"
            )
        try:
            nih.normalize_shards(v)
        except (ValueError, TypeError) as e:
            raise _custom(
                str(e) if str(e).startswith("data.shards") else f"data.shards: {e}"
            ) from None
        return v

    @field_validator("views")
    @classmethod
    def _views(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v):
            raise _custom(f"data.views: expected a non-empty list of {list(nih.VIEWS)}, got {v!r}")
        return v

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if v < 16 or v % 16:
            raise _custom(f"data.image_size: expected a multiple of 16 ≥ 16, got {v}")
        return v


# ---- training ------------------------------------------------------------------------------------
Scheduler = Literal["cosine", "none", "multistep"]


#: First word of ``train.launcher``: the stage runs as ``<launcher> stages/train.py <arch>``.
LAUNCHERS: tuple[str, ...] = ("python", "python3", "torchrun")


#: ``train.augment``: the training batches' augmentation (:mod:`imgae_dx.augment`). Named here,
#: not there, so that validating params.yaml does not import torch.
AugmentMode = Literal["off", "affine_flip"]


class TrainParams(_Block):
    """``train``: the training loop's settings (:func:`imgae_dx.train.train_model`).

    Every key but :data:`GLOBAL_TRAIN_KEYS` may be overridden per architecture inside its
    ``arch.<name>`` block (e.g. ``arch.ra.lr``).
    """

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 64
    lr: NonNegFloat = 1e-3
    weight_decay: NonNegFloat = 0.0
    patience: PositiveInt | None = 5  # epochs without val improvement before stopping; None: never
    min_delta: NonNegFloat = 0.0  # an improvement must exceed this
    grad_clip: NonNegFloat | None = 1.0  # max gradient norm; None or 0: no clipping
    scheduler: Scheduler = "cosine"
    warmup_epochs: NonNegFloat = 0.0  # linear warm-up (all schedulers)
    milestones: list[NonNegInt] = []  # multistep: epochs at which lr *= lr_gamma
    lr_gamma: Annotated[float, Field(gt=0)] = 0.1
    min_lr_ratio: Probability = 0.0  # cosine: final lr / base lr
    val_batch_size: PositiveInt | None = None  # None: 2 x batch_size
    max_train_batches_per_epoch: PositiveInt | None = None  # cap (quick runs, tests)
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    amp: bool = True  # bf16 autocast on CUDA (and on the CPU with cpu_bf16)
    cpu_bf16: bool = False  # bf16 autocast on a CPU with bf16 instructions too (device.py)
    resume: bool = True  # continue an interrupted run from models/.resume (same settings only)
    num_threads: PositiveInt | None = None  # torch CPU threads; None: torch's default
    launcher: str = "python"  # the train stage's command: python, or a torchrun line

    @field_validator("launcher")
    @classmethod
    def _launcher(cls, v: str) -> str:
        words = v.split()
        if not words or words[0] not in LAUNCHERS:
            raise _custom(
                f"train.launcher: {v!r} must start with one of {', '.join(LAUNCHERS)} "
                "(e.g. python, or torchrun --standalone --nproc-per-node=2)"
            )
        return v

    augment: AugmentMode = "off"  # training batches only: off | affine_flip (RA reference's)

    @field_validator("augment", mode="before")
    @classmethod
    def _augment_off(cls, v: Any) -> Any:
        # YAML 1.1 (PyYAML) reads a bare `off` as false: take it as meant.
        return "off" if v is False else v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        from imgae_dx.device import parse_device_spec

        try:
            parse_device_spec(v)
        except ValueError as e:
            raise _custom(str(e)) from None
        return v


#: Machine and run settings that stay global (not overridable in ``arch.<name>``).
GLOBAL_TRAIN_KEYS: tuple[str, ...] = (
    "device", "amp", "cpu_bf16", "resume", "num_threads", "launcher",
)  # fmt: skip
#: How a training run was started, not what it computes: kept out of the model file and the
#: resume fingerprint (N processes with the same global batch train the same model).
LAUNCH_KEYS: frozenset[str] = frozenset({"launcher"})
#: ``train`` keys an ``arch.<name>`` block may override for that architecture alone.
TRAIN_OVERRIDE_KEYS: tuple[str, ...] = tuple(
    k for k in TrainParams.model_fields if k not in GLOBAL_TRAIN_KEYS
)


# ---- scoring and report --------------------------------------------------------------------------
class ScoreParams(_Block):
    """``score``: anomaly maps and image scores (:mod:`imgae_dx.inference`)."""

    map: Literal["auto", scoring.MapMethod] = "auto"  # auto: the architecture's own
    saliency: scoring.Saliency = "ssim"  # of the RA map
    smooth_sigma: NonNegFloat = 0.0
    reduce: str = "mean"  # mean | max | pNN, a percentile (e.g. p99)
    clahe_tiles: PositiveInt = 8
    clahe_clip: float = 2.0  # <= 0: no clipping
    ra_map: scoring.RaMap = scoring.DEFAULT_RA_MAP  # published | project (scoring.py)
    latent: Literal["mean", "sample"] = "mean"  # vae/ra reconstruction: posterior mean | a draw
    latent_seed: NonNegInt = 0  # the draws of latent: sample
    batch_size: PositiveInt = 128
    lpips_weights: str | None = None  # a local LPIPS .pth (never downloaded)
    lpips_backbone_weights: str | None = None
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"  # squeeze: the RA authors' choice

    @field_validator("reduce")
    @classmethod
    def _reduce(cls, v: str) -> str:
        try:
            scoring.parse_reduce(v)
        except ValueError as e:
            raise _custom(f"score.reduce: {e}") from None
        return v


class ReportParams(_Block):
    """``report``: statistics and figures of the report stage (:mod:`imgae_dx.report`)."""

    bootstrap: PositiveInt = 1000  # resamples per interval
    unit: Literal["patient", "image"] = "patient"  # independent unit of intervals and tests
    seed: int = 0
    ci: OpenUnit = 0.95
    threshold_percentile: Annotated[float, Field(ge=0, le=100)] = 95.0  # of val normals
    age_bands: list[int] = [0, 30, 45, 60, 75, 200]  # [lo, hi) edges
    min_stratum: PositiveInt = 10  # fewer normals or abnormals: the stratum reports null
    gallery_n: NonNegInt = 2
    target_specificity: OpenUnit = 0.95
    target_sensitivity: OpenUnit = 0.95
    max_pixels: Annotated[int, Field(ge=2)] = 500_000  # pixel-AUROC subsample cap

    @field_validator("age_bands")
    @classmethod
    def _bands(cls, v: list[int]) -> list[int]:
        if len(v) < 2 or any(b <= a for a, b in zip(v, v[1:])):
            raise _custom(f"report.age_bands: expected >= 2 increasing edges, got {v!r}")
        return v


class MlflowParams(_Block):
    """``mlflow``: optional run logging; never changes an output, so no stage declares it.

    ``required``: an unusable store is an error before the stage does any work, rather than a
    warning and a stage without logging (:func:`imgae_dx.tracking.start_run`).
    """

    enabled: bool = True
    experiment: str = "imgae-dx"
    required: bool = False


# ---- architectures -------------------------------------------------------------------------------
@cache
def arch_block_model(name: str) -> type[_Block]:
    """The schema of ``arch.<name>``: the constructor's kwargs (types from its annotations,
    ``image_size`` excepted: it comes from ``data.image_size``) plus the training overrides."""
    from imgae_dx.models.registry import PIPELINE_KWARGS, constructor_params, get_model_class

    cls = get_model_class(name)
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {}
    for pname, p in constructor_params(cls).items():
        if pname not in PIPELINE_KWARGS:
            fields[pname] = (hints.get(pname, Any), p.default)
    for key in TRAIN_OVERRIDE_KEYS:  # the train field, its ranges included; unset by default
        field = copy.copy(TrainParams.model_fields[key])
        field.default = None
        fields[key] = (field.annotation, field)
    return create_model(f"arch.{name}", __base__=_Block, **fields)


def _constructor_keys(name: str) -> list[str]:
    return [k for k in arch_block_model(name).model_fields if k not in TRAIN_OVERRIDE_KEYS]


# ---- the whole file ------------------------------------------------------------------------------
class Params(_Block):
    """The validated ``params.yaml``. Load it with :func:`load_params`."""

    seed: int  # the data: split and sampling caps (never the training seeds)
    seeds: list[NonNegInt] = [0]  # training seeds: each architecture trains once per seed
    data: DataParams
    models: list[str]  # architectures to train, score and report
    arch: dict[str, Any] = {}  # arch.<name>: see arch_block_model
    train: TrainParams
    score: ScoreParams = ScoreParams()
    report: ReportParams = ReportParams()
    mlflow: MlflowParams = MlflowParams()

    _written: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _keep_as_written(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Params:
        out = handler(data)
        if isinstance(data, Mapping):
            out._written = dict(data)
        return out

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        from imgae_dx.models import list_models

        if not v:
            raise _custom("models: expected a non-empty list of architecture names")
        if len(set(v)) != len(v):
            raise _custom(f"models: duplicate entries in {v}")
        known = list_models()
        for m in v:
            if m not in known:
                raise _custom(
                    f"models: unknown architecture {m!r}{_did_you_mean(m, known)} "
                    f"(valid: {', '.join(known)})"
                )
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: list[int]) -> list[int]:
        if not v:
            raise _custom("seeds: expected a non-empty list of training seeds, e.g. [0, 1, 2]")
        dup = sorted({s for s in v if v.count(s) > 1})
        if dup:
            raise _custom(f"seeds: duplicate entries {dup} in {v} (list each seed once)")
        return v

    @field_validator("arch", mode="before")
    @classmethod
    def _arch(cls, v: Any) -> dict[str, Any]:
        from imgae_dx.models import list_models

        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise _custom(f"arch: expected a mapping of architecture blocks, got {v!r}")
        known = list_models()
        out = {}
        for name, block in v.items():
            if name not in known:
                raise _custom(
                    f"arch.{name}: unknown architecture{_did_you_mean(name, known)} "
                    f"(valid: {', '.join(known)})"
                )
            if block is None:
                block = {}
            if not isinstance(block, Mapping):
                raise _custom(f"arch.{name}: expected a mapping, got {block!r}")
            try:
                out[name] = arch_block_model(name).model_validate(dict(block))
            except ValidationError as e:
                raise _custom(_describe(e, prefix=f"arch.{name}")) from None
        return out

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        for m in self.models:
            if m not in self.arch:
                raise _custom(
                    f"arch.{m}: missing (every entry of `models` needs its block, {{}} for defaults)"
                )
        for m in self.arch:
            _check_constructor(m, self.model_args(m))
        if self.score.saliency == "lpips" and not self.score.lpips_weights:
            if any(self.score_map(m) == "ra" for m in self.models):
                raise _custom(
                    "score.saliency: 'lpips' needs score.lpips_weights (a local LPIPS .pth file; "
                    "nothing is downloaded), or use 'ssim' or 'features'"
                )
        return self

    # -- what the stages read ----------------------------------------------------------------
    def model_args(self, arch: str) -> dict[str, Any]:
        """Constructor kwargs of ``arch``: the keys its block sets (in constructor order), plus
        ``image_size`` from ``data.image_size`` when the constructor takes it."""
        from imgae_dx.models.registry import model_takes_image_size

        block = self.arch[arch]
        kwargs = {
            k: getattr(block, k) for k in _constructor_keys(arch) if k in block.model_fields_set
        }
        if model_takes_image_size(arch):
            kwargs["image_size"] = self.data.image_size
        return kwargs

    def train_for(self, arch: str) -> TrainParams:
        """``train`` with the overrides of ``arch.<arch>`` applied."""
        block = self.arch[arch]
        overrides = {
            k: getattr(block, k) for k in TRAIN_OVERRIDE_KEYS if k in block.model_fields_set
        }
        return self.train.model_copy(update=overrides)

    def score_map(self, arch: str) -> str:
        """The anomaly map ``score@<arch>-<seed>`` computes: ``score.map``, or the model's own for auto."""
        from imgae_dx.models import get_model_class

        return scoring.resolve_map(self.score.map, get_model_class(arch).default_score)

    def as_written(self) -> dict[str, Any]:
        """The parameters as the file states them (no defaults filled in): for display."""
        return self._written


def _check_constructor(arch: str, kwargs: dict[str, Any]) -> None:
    """Run the constructor once on torch's ``meta`` device (no memory, no compute), so a value
    it refuses (``channels: []``, ``dropout: 1.5``) fails at load time, named."""
    import torch

    from imgae_dx.models import build_model

    try:
        with torch.device("meta"):
            build_model(arch, **kwargs)
    except (ValueError, TypeError) as e:
        msg = str(e)
        raise _custom(msg if msg.startswith(f"arch.{arch}") else f"arch.{arch}: {msg}") from None


def validate(params: Mapping[str, Any], where: str = PARAMS_FILE) -> Params:
    """Validate a params mapping; raises :class:`ConfigError` naming the first bad key."""
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    try:
        return Params.model_validate(dict(params))
    except ValidationError as e:
        raise ConfigError(f"{where}: {_describe(e)}") from None


def read_yaml(path: str | os.PathLike) -> Any:
    """A YAML file's content; a missing file or bad YAML is a :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: not found (run from the repository root)")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return raw if raw is not None else {}


def dotted_items(d: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as ``(dotted.key, value)`` pairs, the way ``dvc exp run -S`` names keys
    (an empty mapping is a value)."""
    out: list[tuple[str, Any]] = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out += dotted_items(v, key + ".")
        else:
            out.append((key, v))
    return out


def apply_overlay(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with the leaves of ``overlay`` set, as ``dvc exp run -S key=value`` sets them
    (mappings merge key by key; any other value, lists included, replaces)."""
    out = dict(base)
    for k, v in overlay.items():
        if isinstance(v, Mapping) and v and isinstance(out.get(k), Mapping):
            out[k] = apply_overlay(out[k], v)
        else:
            out[k] = v
    return out


def load_params(
    path: str | os.PathLike = PARAMS_FILE, *, overlay: str | os.PathLike | None = None
) -> Params:
    """Read and validate ``params.yaml``: the one way every stage gets its parameters.

    ``overlay``: a preset such as ``configs/paper.yaml``, applied over the file first.
    """
    raw, where = read_yaml(path), str(path)
    if overlay is not None:
        extra = read_yaml(overlay)
        if not isinstance(raw, Mapping) or not isinstance(extra, Mapping):
            raise ConfigError(f"{where} + {overlay}: expected mappings at the top level")
        raw, where = apply_overlay(raw, extra), f"{where} + {overlay}"
    return validate(raw, where=where)


# ---- error messages ------------------------------------------------------------------------------
_KINDS = {
    "int": "int",
    "float": "number",
    "bool": "true/false",
    "string": "string",
    "list": "list",
    "dict": "mapping",
    "model": "mapping",
}


def _did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


#: Parts of a pydantic error location that name a union member, not a key.
_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none", "tuple"}


def _field_path(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """``loc`` without pydantic's union-member tags (``str``, ``list[...]``, ``function-...``)."""
    return tuple(
        p
        for p in loc
        if not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS or p.startswith("function")))
    )


def _block_at(loc: tuple[Any, ...], prefix: str) -> type[BaseModel] | None:
    """The schema model that holds the key at ``loc`` (for the list of valid keys)."""
    model: Any = arch_block_model(prefix.split(".")[1]) if prefix else Params
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        ann = field.annotation if field is not None else None
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _describe(err: ValidationError, prefix: str = "") -> str:
    """The first error of ``err`` as ``<key>: <what is wrong> (<what is valid>)``."""
    e = err.errors(include_url=False)[0]
    loc = _field_path(e["loc"])
    key = prefix
    for p in loc:
        key += f"[{p}]" if isinstance(p, int) else f"{'.' * bool(key)}{p}"
    kind, value = e["type"], e.get("input")
    if kind == "imgae_dx":
        return e["msg"]
    if kind == "missing":
        return f"missing key {key!r}"
    if kind == "extra_forbidden":
        block = _block_at(loc, prefix)
        valid = list(block.model_fields) if block is not None else []
        hint = _did_you_mean(str(loc[-1]), valid)
        if prefix:
            arch = prefix.split(".")[1]
            return (
                f"{key}: unknown key{hint} (constructor kwargs: {', '.join(_constructor_keys(arch))}; "
                f"training overrides: {', '.join(TRAIN_OVERRIDE_KEYS)})"
            )
        return f"{key}: unknown key{hint} (valid: {', '.join(valid)})"
    if kind == "literal_error":
        valid = e.get("ctx", {}).get("expected", "")
        noun = loc[-1] if loc and isinstance(loc[-1], str) else "entry"
        return f"{key}: unknown {noun} {value!r} (valid: {valid.replace(' or ', ', ')})"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        name = _KINDS.get(kind.split("_")[0], kind.split("_")[0])
        hint = ""
        if name == "number" and isinstance(value, str) and _is_float(value):
            hint = f" (YAML reads {value} as text: write it with a dot, e.g. 1.0e-3)"
        return f"{key}: expected {name}, got {value!r}{hint}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        op = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<"}.get(kind, "<=")
        bound = next(iter(e.get("ctx", {}).values()), "?")
        return f"{key}: expected a value {op} {bound}, got {value!r}"
    if kind == "string_pattern_mismatch":
        block = _block_at(loc, prefix)
        field = block.model_fields.get(str(loc[-1])) if block is not None else None
        wanted = (field.description if field is not None else None) or e["ctx"]["pattern"]
        return f"{key}: expected {wanted}, got {value!r}"
    if kind == "sequence_str":
        return f"{key}: expected a list, got {value!r}"
    return f"{key}: {e['msg']} (got {value!r})"
