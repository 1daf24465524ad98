"""The LPIPS network (Zhang et al. 2018, v0.1) in Flax Linen and its weight loading, from a local file named in
the config. It serves as the tokenizer's perceptual loss (`loss.perceptual_weights`) and as an evaluation
metric (`eval.lpips_weights`; the metric's "unavailable" protocol is in `eval/lpips.py`).

No package on this machine ships the ImageNet backbones LPIPS needs (the `lpips` wheel carries only the
linear heads and downloads torchvision's AlexNet/VGG at run time), and nothing downloads here. So LPIPS is
computed only when a local weights file is named.

Weight file: `.npz`, `.safetensors` (or `.pth`/`.pt` when torch is installed) holding PyTorch-named arrays:
the torchvision backbone as `features.{i}.weight|bias` (or the `lpips.LPIPS` state-dict names
`net.slice{k}.{i}.weight|bias`, mapped to the same) and the linear heads `lin{k}.model.1.weight` of shape
(1, C, 1, 1). One way to make it on a machine with network access:

    import torch, torchvision, lpips, safetensors.torch
    alex = torchvision.models.alexnet(weights="DEFAULT")
    sd = {f"features.{k}": v for k, v in alex.features.state_dict().items()}
    sd |= torch.load(f"{lpips.__path__[0]}/weights/v0.1/alex.pth")
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, "lpips_alex.safetensors")

Computation (as `lpips.LPIPS(net=..., version="0.1")`, eval mode): inputs in [-1, 1]; shift/scale by the
ImageNet-derived constants below; backbone activations after each stage's ReLU; unit-normalise each
feature vector over channels (eps 1e-10); squared difference; 1x1 linear head; spatial mean; sum over
stages. Videos: per frame, averaged over frames.
"""

from __future__ import annotations

import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)

# torchvision `features` layers: ("conv", index, out_channels, kernel, stride, padding) | ("pool",) | ("tap",)
# where "tap" marks the ReLU output LPIPS compares (each conv is followed by a ReLU).
_ALEX = (
    ("conv", 0, 64, 11, 4, 2),
    ("tap",),
    ("pool",),
    ("conv", 3, 192, 5, 1, 2),
    ("tap",),
    ("pool",),
    ("conv", 6, 384, 3, 1, 1),
    ("tap",),
    ("conv", 8, 256, 3, 1, 1),
    ("tap",),
    ("conv", 10, 256, 3, 1, 1),
    ("tap",),
)


def _vgg16_layers() -> tuple:
    layers, index = [], 0
    for block, (channels, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool",))
            index += 1
        for _ in range(convs):
            layers.append(("conv", index, channels, 3, 1, 1))
            index += 2  # conv + ReLU
        layers.append(("tap",))
    return tuple(layers)


NETS: dict[str, tuple] = {"alex": _ALEX, "vgg": _vgg16_layers()}


class LPIPSNet(nn.Module):
    """Backbone + linear heads; __call__(x_nhwc, y_nhwc) in [-1, 1] -> (N,) distances."""

    net: str = "alex"

    def _features(self, x: jax.Array) -> list[jax.Array]:
        shift = jnp.asarray(LPIPS_SHIFT, x.dtype)
        scale = jnp.asarray(LPIPS_SCALE, x.dtype)
        h = (x - shift) / scale
        taps = []
        for layer in NETS[self.net]:
            if layer[0] == "conv":
                _, index, channels, kernel, stride, pad = layer
                h = nn.Conv(
                    channels,
                    (kernel, kernel),
                    strides=(stride, stride),
                    padding=((pad, pad), (pad, pad)),
                    name=f"features_{index}",
                )(h)
                h = nn.relu(h)
            elif layer[0] == "pool":  # torch MaxPool2d: alex 3/2, vgg 2/2, no padding, floor
                window = 3 if self.net == "alex" else 2
                h = nn.max_pool(h, (window, window), strides=(2, 2), padding="VALID")
            else:
                taps.append(h)
        return taps

    @nn.compact
    def __call__(self, x_nhwc: jax.Array, y_nhwc: jax.Array) -> jax.Array:
        both = self._features(jnp.concatenate([x_nhwc, y_nhwc], axis=0))
        n = x_nhwc.shape[0]
        total = jnp.zeros((n,), jnp.float32)
        for k, feats in enumerate(both):
            fx, fy = feats[:n], feats[n:]
            fx = fx / (jnp.sqrt(jnp.sum(fx**2, axis=-1, keepdims=True)) + 1e-10)
            fy = fy / (jnp.sqrt(jnp.sum(fy**2, axis=-1, keepdims=True)) + 1e-10)
            head = nn.Conv(1, (1, 1), use_bias=False, name=f"lin{k}")((fx - fy) ** 2)
            total = total + jnp.mean(head, axis=(1, 2, 3))
        return total


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        with np.load(path, allow_pickle=False) as data:
            return {k: np.asarray(data[k]) for k in data.files}
    if ext == ".safetensors":
        from safetensors.numpy import load_file

        return load_file(path)
    if ext in (".pth", ".pt"):
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                f"LPIPS weights {path}: reading .pth needs torch; convert to .npz/.safetensors"
            ) from e
        # weights_only: a .pth is a pickle, and a full unpickle runs whatever code the file names.
        state = torch.load(path, map_location="cpu", weights_only=True)
        return {k: v.detach().cpu().numpy() for k, v in state.items()}
    raise ValueError(f"LPIPS weights {path}: unknown format {ext!r}; use .npz, .safetensors or .pth")


def params_from_torch_names(arrays: dict[str, np.ndarray], net: str = "alex") -> dict[str, Any]:
    """PyTorch-named LPIPS arrays -> this module's params (OIHW -> HWIO); a missing array is an error."""
    canon = {re.sub(r"^net\.slice\d+\.", "features.", k): v for k, v in arrays.items()}
    params: dict[str, Any] = {}
    missing = []
    for layer in NETS[net]:
        if layer[0] != "conv":
            continue
        name = f"features.{layer[1]}"
        if f"{name}.weight" not in canon or f"{name}.bias" not in canon:
            missing.append(name)
            continue
        params[f"features_{layer[1]}"] = {
            "kernel": np.transpose(canon[f"{name}.weight"], (2, 3, 1, 0)).astype(np.float32),
            "bias": canon[f"{name}.bias"].astype(np.float32),
        }
    num_taps = sum(1 for layer in NETS[net] if layer[0] == "tap")
    for k in range(num_taps):
        key = f"lin{k}.model.1.weight"
        if key not in canon:
            missing.append(key)
            continue
        params[f"lin{k}"] = {"kernel": np.transpose(canon[key], (2, 3, 1, 0)).astype(np.float32)}
    if missing:
        raise ValueError(
            f"LPIPS ({net}) weights lack {missing[:4]}{' ...' if len(missing) > 4 else ''}; expected "
            "torchvision `features.{i}.weight|bias` and lpips heads `lin{k}.model.1.weight` "
            "(see motionaura_jax/models/lpips.py)"
        )
    return {"params": params}


class LPIPS:
    """Loaded LPIPS: `distance(x_nhwc, y_nhwc)` per image; `video(x_bthwc, y_bthwc)` averages frames."""

    def __init__(self, variables: dict[str, Any], net: str = "alex", source: str = ""):
        self.net, self.source = net, source
        self.module = LPIPSNet(net=net)
        self.variables = jax.device_put(variables)
        self._apply = jax.jit(self.module.apply)

    @classmethod
    def from_file(cls, path: str, net: str = "alex") -> LPIPS:
        if net not in NETS:
            raise ValueError(f"LPIPS net {net!r} unknown; use one of {list(NETS)}")
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"LPIPS weights file {path!r} not found (set eval.lpips_weights or loss.perceptual_weights "
                "to a local file)"
            )
        return cls(params_from_torch_names(_read_arrays(path), net), net=net, source=os.path.basename(path))

    def distance(self, x_nhwc: np.ndarray, y_nhwc: np.ndarray) -> np.ndarray:
        out = np.asarray(
            self._apply(self.variables, jnp.asarray(x_nhwc, jnp.float32), jnp.asarray(y_nhwc, jnp.float32))
        )
        if np.isnan(out).any() and np.isfinite(x_nhwc).all() and np.isfinite(y_nhwc).all():
            # Frames too small leave a deep feature map empty, and its spatial mean is NaN.
            raise ValueError(
                f"LPIPS-{self.net}: {x_nhwc.shape[1]}x{x_nhwc.shape[2]} px frames are too small for the "
                "network's deepest features; use frames of at least 32 px"
            )
        return out

    def video(self, x_bthwc: np.ndarray, y_bthwc: np.ndarray) -> np.ndarray:
        x, y = np.asarray(x_bthwc), np.asarray(y_bthwc)
        if x.shape != y.shape or x.ndim != 5:
            raise ValueError(
                f"LPIPS video: expected two equal (B, T, H, W, 3) arrays, got {x.shape} and {y.shape}"
            )
        b, t = x.shape[:2]
        per_frame = self.distance(x.reshape(b * t, *x.shape[2:]), y.reshape(b * t, *y.shape[2:]))
        return per_frame.reshape(b, t).mean(axis=1)
