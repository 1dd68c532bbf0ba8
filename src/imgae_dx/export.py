"""``imgae-dx export DETECTOR --format onnx``: the detector as one ONNX file, and scoring it.

The graph takes the preprocessed films, ``images: (B, S, S) uint8`` (what
:func:`imgae_dx.data.prepare.preprocess` returns), and computes in float32 what
:func:`imgae_dx.inference.score_images` computes in torch: ``x = images / 255``, the
reconstruction ``x_hat`` (clamped to [0, 1]) and, where the map is a tensor function of the
two, the map itself. The detector's ``meta`` (threshold, quantiles, score method...) is in the
file's ``metadata_props`` under :data:`META_KEY`, so the ``.onnx`` file is a detector on its
own: ``imgae-dx predict model.onnx films/`` runs it through ONNX Runtime.

What is in the graph, per map (``docs/architecture.md``, "Detectors"):

- ``sq``, ``abs``: the whole map (output ``map``); only the optional smoothing and the
  reduction to one score (``score.reduce``) run in numpy after it.
- ``ssim``, ``clahe``, ``ra``: not exported. CLAHE (per-tile histograms, clipping and
  interpolated CDF lookups, :func:`imgae_dx.scoring.clahe`) and the SSIM/LPIPS saliency are
  numpy/scipy code; ``predict`` computes them from the graph's ``x_hat`` with the same
  :func:`imgae_dx.inference.method_map` as the torch path. The RA's ``features`` saliency needs
  the encoder's embeddings of x and x̂, which the graph outputs (``feat_x_<i>``,
  ``feat_xhat_<i>``). The ``lpips`` saliency also needs the local LPIPS weights.
- ``score.latent: sample`` (vae, ra reconstructed from seeded noise draws) is not exported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from imgae_dx.detector import Detector, DetectorError, check_meta, load_detector
from imgae_dx.errors import UserError
from imgae_dx.inference import Scores, method_map
from imgae_dx.io import atomic_path

META_KEY = "imgae_dx.detector"
#: Maps that are a tensor function of (x, x̂) and so live in the graph.
GRAPH_MAPS = ("sq", "abs")
OPSET = 18


class _Graph(nn.Module):
    """uint8 films -> (x_hat, [map], [feat_x..., feat_xhat...]), all float32."""

    def __init__(self, model: nn.Module, map_kind: str, features: bool):
        super().__init__()
        self.model, self.map_kind, self.features = model, map_kind, features

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = images.unsqueeze(1).float() / 255.0  # (B, 1, S, S), as images_to_tensor
        xh = self.model(x).float().clamp(0, 1)
        outs = [xh[:, 0]]  # (B, S, S)
        if self.map_kind == "sq":
            outs.append(((x - xh) ** 2)[:, 0])
        elif self.map_kind == "abs":
            outs.append((x - xh).abs()[:, 0])
        if self.features:
            outs += [f.float() for f in self.model.encoder_features(x)]
            outs += [f.float() for f in self.model.encoder_features(xh)]
        return tuple(outs)


def output_names(detector: Detector, n_levels: int) -> list[str]:
    m = detector.method
    names = ["x_hat"] + (["map"] if m.map in GRAPH_MAPS else [])
    if m.saliency == "features":
        names += [f"feat_x_{i}" for i in range(n_levels)]
        names += [f"feat_xhat_{i}" for i in range(n_levels)]
    return names


def export_onnx(detector_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write ``out`` (.onnx, atomic): the detector's graph with its ``meta`` embedded."""
    import onnx

    det = load_detector(detector_path)
    if det.model is None:
        raise UserError(f"{detector_path}: already an ONNX file; export a .pt detector")
    m = det.method
    if m.latent == "sample":
        raise UserError(
            f"{detector_path}: score.latent 'sample' reconstructs from seeded noise draws, which "
            "the ONNX graph does not take; export a detector scored with latent 'mean'"
        )
    model = det.model.cpu().eval()
    s = det.image_size
    example = torch.zeros((2, s, s), dtype=torch.uint8)
    n_levels = (
        len(model.encoder_features(example[:, None].float())) if m.saliency == "features" else 0
    )
    graph = _Graph(model, m.map, m.saliency == "features").eval()
    names = output_names(det, n_levels)
    with atomic_path(out) as tmp, torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            graph, (example,), dynamo=True, input_names=["images"], output_names=names,
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=OPSET,
            verbose=False, optimize=True,
        )  # fmt: skip
        proto = program.model_proto
        meta = {**det.meta, "onnx": {"outputs": names, "map_in_graph": m.map in GRAPH_MAPS}}
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, json.dumps(meta)
        onnx.checker.check_model(proto)
        onnx.save_model(proto, str(tmp))
    return Path(out)


def read_onnx_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The detector ``meta`` embedded in an exported ``.onnx`` file."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise DetectorError(f"{path}: not a readable ONNX file ({e}); export it again") from e
    props = {p.key: p.value for p in proto.metadata_props}
    if META_KEY not in props:
        raise DetectorError(
            f"{path}: an ONNX file without ImgAE-Dx detector metadata; make it with "
            "`imgae-dx export DETECTOR --format onnx`"
        )
    meta = check_meta(json.loads(props[META_KEY]), str(path))
    if "onnx" not in meta:
        raise DetectorError(f"{path}: detector metadata lacks its ONNX outputs; export it again")
    return meta


def onnx_scorer(path: str | os.PathLike, detector: Detector, batch_size: int = 128):
    """A :data:`imgae_dx.predict.Scorer` running ``path`` through ONNX Runtime (its CUDA
    provider when installed, else the CPU)."""
    import onnxruntime as ort

    providers = [
        p
        for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
        if p in ort.get_available_providers()
    ]
    session = ort.InferenceSession(str(path), providers=providers)
    method, names = detector.method, detector.meta["onnx"]["outputs"]
    if method.saliency == "lpips":
        raise DetectorError(f"{path}: the LPIPS saliency is not available with ONNX; use the .pt")

    def score(images: np.ndarray, keep_maps: bool) -> Scores:
        from imgae_dx import scoring

        n = len(images)
        out = Scores(scores=np.zeros(n, dtype=np.float64))
        maps = []
        for i in range(0, n, batch_size):
            amap = _batch_map(
                session, names, method, np.ascontiguousarray(images[i : i + batch_size])
            )
            out.scores[i : i + len(amap)] = scoring.image_scores(amap, method.reduce)
            maps.append(amap.astype(np.float16))
        if keep_maps:
            out.maps = np.concatenate(maps) if maps else None
        return out

    return score


def _batch_map(session, names: list[str], method, images: np.ndarray) -> np.ndarray:
    """The anomaly map (B, S, S) float32 of one uint8 batch, from the graph's outputs."""
    from imgae_dx import scoring

    got = dict(zip(names, session.run(names, {"images": images.astype(np.uint8)})))
    if "map" in got:
        return scoring.gaussian_smooth(got["map"].astype(np.float32), method.smooth_sigma)
    x = images.astype(np.float32) / np.float32(255.0)
    features = None
    if method.saliency == "features":
        fx = [v for k, v in got.items() if k.startswith("feat_x_")]
        fh = [v for k, v in got.items() if k.startswith("feat_xhat_")]
        features = (fx, fh)
    return method_map(x, got["x_hat"], method, features=features)
