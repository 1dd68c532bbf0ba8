"""LPIPS (Zhang et al., CVPR 2018, https://arxiv.org/abs/1801.03924) from local weight files only.

LPIPS compares unit-normalised activations of an ImageNet backbone (AlexNet, VGG16 or
SqueezeNet 1.1 -- the one the RA authors' evaluation uses) through learned 1×1 "lin" layers. Both parts need pretrained weights, and this module never downloads
anything: ``load_lpips`` reads them from files you place yourself. Accepted layouts:

- one full state dict of the ``lpips`` package's ``LPIPS`` module (keys ``net.sliceK.I.*``
  and ``linK.model.1.weight``), or
- the ``lpips`` package's lin file (``weights/v0.1/alex.pth``, ``vgg.pth`` or ``squeeze.pth``:
  keys ``linK.model.1.weight``) as ``weights`` plus torchvision's backbone state dict
  (``alexnet-owt-7be5be79.pth`` / ``vgg16-397923af.pth`` / ``squeezenet1_1-b8a52dc0.pth``:
  keys ``features.I.*``) as ``backbone_weights``.

Used by the RA anomaly map (``scoring.anomaly_map(..., lpips_fn=make_lpips_fn(...))``).

Written here rather than taken from the ``lpips`` package because that package fetches its
backbone through torchvision's download machinery and torchvision wheels do not import beside
this project's CPU torch; the network is five (seven for SqueezeNet) backbone taps and as many
1×1 convolutions.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# (torchvision features index ranges per tap, output channels per tap)
_ALEX_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
_ALEX_CHANNELS = (64, 192, 384, 256, 256)
_VGG_SLICES = ((0, 4), (4, 9), (9, 16), (16, 23), (23, 30))
_VGG_CHANNELS = (64, 128, 256, 512, 512)
# torchvision's squeezenet1_1 features; the lpips package taps it seven times
_SQUEEZE_SLICES = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13))
_SQUEEZE_CHANNELS = (64, 128, 256, 384, 384, 512, 512)
NETS = ("alex", "vgg", "squeeze")


def _alex_features() -> list[nn.Module]:
    return [
        nn.Conv2d(3, 64, 11, stride=4, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(),
    ]


def _vgg_features() -> list[nn.Module]:
    layers: list[nn.Module] = []
    cin = 3
    for v in (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512):
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
            cin = v
    return layers


class _Fire(nn.Module):
    """SqueezeNet's fire module (Iandola et al. 2016), parameter names as torchvision's:
    1×1 squeeze, then 1×1 and 3×3 expansions concatenated, each followed by a ReLU."""

    def __init__(self, c_in: int, c_squeeze: int, c_1x1: int, c_3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(c_in, c_squeeze, 1)
        self.expand1x1 = nn.Conv2d(c_squeeze, c_1x1, 1)
        self.expand3x3 = nn.Conv2d(c_squeeze, c_3x3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.squeeze(x))
        return torch.cat([F.relu(self.expand1x1(h)), F.relu(self.expand3x3(h))], dim=1)


def _squeeze_features() -> list[nn.Module]:
    def pool() -> nn.Module:
        return nn.MaxPool2d(3, 2, ceil_mode=True)

    return [
        nn.Conv2d(3, 64, 3, stride=2),
        nn.ReLU(),
        pool(),
        _Fire(64, 16, 64, 64),
        _Fire(128, 16, 64, 64),
        pool(),
        _Fire(128, 32, 128, 128),
        _Fire(256, 32, 128, 128),
        pool(),
        _Fire(256, 48, 192, 192),
        _Fire(384, 48, 192, 192),
        _Fire(384, 64, 256, 256),
        _Fire(512, 64, 256, 256),
    ]


# net -> (torchvision features, index ranges per tap, output channels per tap)
_NETS = {
    "alex": (_alex_features, _ALEX_SLICES, _ALEX_CHANNELS),
    "vgg": (_vgg_features, _VGG_SLICES, _VGG_CHANNELS),
    "squeeze": (_squeeze_features, _SQUEEZE_SLICES, _SQUEEZE_CHANNELS),
}


class _Backbone(nn.Module):
    """Backbone split into taps, module names as in the ``lpips`` package (slice1..)."""

    def __init__(self, net: str) -> None:
        super().__init__()
        features, slices, _ = _NETS[net]
        layers = features()
        self.n_taps = len(slices)
        for k, (lo, hi) in enumerate(slices, start=1):
            seq = nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(lo, hi)))
            self.add_module(f"slice{k}", seq)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for k in range(1, self.n_taps + 1):
            x = getattr(self, f"slice{k}")(x)
            outs.append(x)
        return outs


class _Lin(nn.Module):
    """1×1 conv to one channel; ``model.1`` as in the ``lpips`` package (after its Dropout)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(cin, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """LPIPS v0.1 distance. ``forward(x, y)``: (B, C, H, W) in [0, 1], C in {1, 3} -> (B, H, W).

    Returns the spatial map (each layer's lin output upsampled bilinearly to H × W and summed);
    its spatial mean is the usual scalar LPIPS distance. Grayscale inputs are repeated to RGB.
    Inputs smaller than ``min_size`` (AlexNet needs ≥ 31 px) are upsampled first and the map
    is resized back.
    """

    def __init__(self, net: str = "alex", *, min_size: int = 64) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"net must be one of {NETS}, got {net!r}")
        self.net_name = net
        self.min_size = min_size
        self.net = _Backbone(net)
        for k, c in enumerate(_NETS[net][2]):
            self.add_module(f"lin{k}", _Lin(c))
        # ImageNet scaling of the lpips package (inputs first mapped to [-1, 1]).
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.eval()

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 3:
            x = x[:, None]
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return ((x * 2.0 - 1.0) - self.shift) / self.scale

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        a, b = self._prep(x), self._prep(y)
        if min(size) < self.min_size:
            up = (max(self.min_size, size[0]), max(self.min_size, size[1]))
            a = F.interpolate(a, size=up, mode="bilinear", align_corners=False)
            b = F.interpolate(b, size=up, mode="bilinear", align_corners=False)
        total = None
        for k, (fa, fb) in enumerate(zip(self.net(a), self.net(b))):
            fa = fa / (torch.sqrt((fa**2).sum(1, keepdim=True)) + 1e-10)
            fb = fb / (torch.sqrt((fb**2).sum(1, keepdim=True)) + 1e-10)
            d = getattr(self, f"lin{k}")((fa - fb) ** 2)
            d = F.interpolate(d, size=tuple(size), mode="bilinear", align_corners=False)
            total = d if total is None else total + d
        return total[:, 0]


_LIN_KEY = re.compile(r"^lin(\d)\.model\.(\d)\.weight$")
_TV_KEY = re.compile(r"^features\.(\d+)\.(.+)$")  # (fire modules: features.3.squeeze.weight)


def _read_state(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"LPIPS {what} file not found: {p}. ImgAE-Dx never downloads weights: copy them "
            "to this machine and point score.lpips_weights (and, for the lpips package's "
            "lin-only files, score.lpips_backbone_weights) at them, or use a download-free "
            "RA saliency ('ssim' or 'features')."
        )
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{p} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _remap(state: dict[str, torch.Tensor], net: str) -> dict[str, torch.Tensor]:
    """Map lpips-package and torchvision key layouts onto this module's names."""
    slices = _NETS[net][1]
    out: dict[str, torch.Tensor] = {}
    for key, val in state.items():
        if key.startswith("net.slice") or key in ("shift", "scale"):
            out[key] = val
        elif m := _LIN_KEY.match(key):  # model.0 = lin without the dropout layer
            out[f"lin{m.group(1)}.model.1.weight"] = val
        elif m := _TV_KEY.match(key):
            idx = int(m.group(1))
            for k, (lo, hi) in enumerate(slices, start=1):
                if lo <= idx < hi:
                    out[f"net.slice{k}.{idx}.{m.group(2)}"] = val
        # others (scaling_layer.*, classifier.*) are constants or unused heads
    return out


def load_lpips(
    weights: str | os.PathLike,
    *,
    net: str = "alex",
    backbone_weights: str | os.PathLike | None = None,
    min_size: int = 64,
) -> LPIPS:
    """Build LPIPS and load every parameter from local files (see the module docstring)."""
    model = LPIPS(net, min_size=min_size)
    state = _remap(_read_state(weights, "weights"), net)
    if backbone_weights is not None:
        state.update(_remap(_read_state(backbone_weights, "backbone weights"), net))
    expected = dict(model.state_dict())
    missing = sorted(k for k in expected if k not in state and k not in ("shift", "scale"))
    if missing:
        hint = (
            "the backbone (pass backbone_weights)"
            if missing[0].startswith("net.")
            else "lin layers"
        )
        raise ValueError(
            f"LPIPS-{net} weights lack {len(missing)} tensors, e.g. {missing[:3]}: missing {hint}"
        )
    state = {k: v for k, v in state.items() if k in expected}
    for k in ("shift", "scale"):
        state.setdefault(k, expected[k])
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise ValueError(
                f"LPIPS-{net} tensor {k}: shape {tuple(v.shape)}, "
                f"expected {tuple(expected[k].shape)}"
            )
    model.load_state_dict(state, strict=True)
    return model.eval()


def make_lpips_fn(
    weights: str | os.PathLike,
    *,
    net: str = "alex",
    backbone_weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
    min_size: int = 64,
):
    """A numpy callable ``(x, y) -> map`` for ``scoring.anomaly_map(..., lpips_fn=...)``.

    ``x, y: (B, H, W)`` float in [0, 1]; returns (B, H, W) float32 spatial LPIPS maps.
    """
    model = load_lpips(weights, net=net, backbone_weights=backbone_weights, min_size=min_size)
    model = model.to(device)

    @torch.no_grad()
    def lpips_fn(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xa, ya = np.asarray(x, np.float32), np.asarray(y, np.float32)
        out = []
        for i in range(0, len(xa), batch_size):
            tx = torch.from_numpy(xa[i : i + batch_size]).to(device)
            ty = torch.from_numpy(ya[i : i + batch_size]).to(device)
            out.append(model(tx, ty).float().cpu().numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros_like(xa)

    return lpips_fn
