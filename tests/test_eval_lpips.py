"""LPIPS: parity with a PyTorch LPIPS v0.1 on the same weights; "unavailable" without weights."""

import numpy as np
import pytest
import safetensors.torch as safetensors_torch  # test dependency (requirements-test.txt)
import torch

from motionaura_jax.eval import lpips as lpips_lib
from motionaura_jax.models import lpips as lpips_net


def _torch_backbone(net):
    """torchvision `features` layout (alexnet / vgg16), random weights -> (Sequential, tap indices)."""
    nn = torch.nn
    if net == "alex":
        layers = [
            nn.Conv2d(3, 64, 11, 4, 2),
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
        return nn.Sequential(*layers), [1, 4, 7, 9, 11]
    layers, c_in = [], 3
    for block, (c, n) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(nn.MaxPool2d(2, 2))
        for _ in range(n):
            layers += [nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU()]
            c_in = c
    return nn.Sequential(*layers), [3, 8, 15, 22, 29]


def _torch_lpips(backbone, taps, heads, x, y):
    shift = torch.tensor(lpips_net.LPIPS_SHIFT).view(1, 3, 1, 1)
    scale = torch.tensor(lpips_net.LPIPS_SCALE).view(1, 3, 1, 1)

    def feats(z):
        out, h = [], (z - shift) / scale
        for i, layer in enumerate(backbone):
            h = layer(h)
            if i in taps:
                out.append(h)
        return out

    total = 0
    for k, (fx, fy) in enumerate(zip(feats(x), feats(y), strict=True)):
        fx = fx / (torch.sqrt(torch.sum(fx**2, dim=1, keepdim=True)) + 1e-10)
        fy = fy / (torch.sqrt(torch.sum(fy**2, dim=1, keepdim=True)) + 1e-10)
        total = total + torch.nn.functional.conv2d((fx - fy) ** 2, heads[k]).mean(dim=(2, 3))
    return total[:, 0]


@pytest.mark.parametrize("net,size", [("alex", 64), ("vgg", 32)])
def test_lpips_matches_torch_reference_on_same_weights(tmp_path, net, size):
    torch.manual_seed(0)
    backbone, taps = _torch_backbone(net)
    channels = [backbone[i - 1].out_channels for i in taps]
    heads = [torch.rand(1, c, 1, 1) * 0.1 for c in channels]
    state = {f"features.{k}": v for k, v in backbone.state_dict().items()}
    state |= {f"lin{k}.model.1.weight": h for k, h in enumerate(heads)}
    path = tmp_path / f"lpips_{net}.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in state.items()}, str(path))

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, 2, size, size, 3)).astype(np.float32)  # (B, T, H, W, C) videos
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1).astype(np.float32)
    metric = lpips_lib.load_lpips(str(path), net=net)
    ours = metric.video(x, y)
    with torch.no_grad():
        to_nchw = lambda a: torch.from_numpy(a.reshape(-1, size, size, 3)).permute(0, 3, 1, 2)  # noqa: E731
        ref = _torch_lpips(backbone, taps, heads, to_nchw(x), to_nchw(y)).numpy().reshape(2, 2).mean(1)
    assert ref.min() > 1e-4  # a non-trivial distance is being compared
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=1e-6)
    assert np.all(metric.video(x, x) < 1e-6)
    assert isinstance(lpips_lib.lpips_or_unavailable(metric, x, y), float)


def test_no_weights_means_unavailable_never_a_number():
    x = np.zeros((1, 2, 64, 64, 3), np.float32)
    metric = lpips_lib.load_lpips(None)
    assert metric is None
    assert lpips_lib.lpips_or_unavailable(metric, x, x) == "unavailable"
    assert lpips_lib.protocol(metric)["lpips"] == "unavailable"


def test_bad_weight_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="eval.lpips_weights"):
        lpips_lib.load_lpips(str(tmp_path / "missing.npz"))
    partial = tmp_path / "partial.npz"
    np.savez(partial, **{"features.0.weight": np.zeros((64, 3, 11, 11), np.float32)})
    with pytest.raises(ValueError, match="lack"):
        lpips_lib.load_lpips(str(partial))
