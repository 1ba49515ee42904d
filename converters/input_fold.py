"""Lossless integer input: the input normalisation folded into the first convolution.

An int8 input tensor has one scale and zero point for all three channels. With a per-channel
normalisation, (pixel - mean_c) / std_c as torchvision's MobileNetV2 has, all channels share one
grid (a step of 1.09 grey levels there), and with (pixel - 127.5) / 127.5 (EfficientNet-Lite) real 0
must sit on the grid, so every pixel falls half a step off it. Either way each pixel is rounded,
and two pieces of code computing the same affine map in a different order round some pixels
differently (62 of 256 values for Lite0 between the runtime and TFLite's own quantizer).

Folding the normalisation into the first convolution makes the model take (pixel - C) / K with C an
integer: its int8 input is then exactly pixel - 128 (uint8: the pixel itself). The runtime fills it
with one XOR instead of float arithmetic (edgeembed.preprocess, 1.0 ms -> 0.004 ms per 224x224
picture here), and the converter's fidelity check and the device feed the model the same integers.
The folded float model gives the original's outputs, except where the convolution's zero padding now
stands for pixel C instead of the channel's mean (MobileNetV2: cosine 0.999995, same top-1 on 500
of 500 pictures); the fidelity report compares the int8 model with the original float model, so
that difference is in its figures.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from edgeembed.spec import Preprocessing

from .qat import _consumers, weight_units


@dataclass(frozen=True)
class FoldedInput:
    """A copy of the model that takes (pixel - C) / K, its preprocessing, and the input range int8 must span."""

    model: Any
    pre: Preprocessing
    input_range: tuple[float, float]  # pixel 0 .. 255 in the folded model's input units
    original: Preprocessing


def _stem(model) -> Any | None:
    """The convolution the image input goes into, through zero padding at most; None if there is none."""
    import keras

    inputs = [l for l in model.layers if isinstance(l, keras.layers.InputLayer)]
    if len(inputs) != 1:
        return None
    nxt = _consumers(inputs[0], model)
    if len(nxt) == 1 and isinstance(nxt[0], keras.layers.ZeroPadding2D):
        nxt = _consumers(nxt[0], model)
    if len(nxt) != 1 or type(nxt[0]) is not keras.layers.Conv2D or nxt[0].groups != 1:
        return None
    return nxt[0]


def fold_input_normalisation(model, pre: Preprocessing) -> FoldedInput | None:
    """Fold ``pre``'s mean and std into the model's first convolution; None when the model has no such stem.

    ``model`` is left as it is: the result holds a copy.
    """
    import keras

    mean = np.broadcast_to(np.asarray(pre.mean, np.float64), (3,))
    std = np.broadcast_to(np.asarray(pre.std, np.float64), (3,))
    if pre.color_order == "BGR":
        mean, std = mean[::-1], std[::-1]
    if _stem(model) is None or not np.all(std > 0):
        return None
    c = float(np.clip(np.round(mean.mean()), 1, 254))  # an integer pixel value: the input's zero
    k = float(round(std.mean(), 4))
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    conv = _stem(copy)
    unit = next(u for u in weight_units(copy) if u.layer is conv)
    if unit.bn is None and not conv.use_bias:
        return None  # nowhere to put the offset
    # x_c = a_c * x'_c + b_c, with x' = (pixel - C) / K the folded model's input
    a, b = k / std, (c - mean) / std
    w = conv.get_weights()
    kernel = w[0].astype(np.float64)
    offset = np.einsum("hwio,i->o", kernel, b)
    w[0] = (kernel * a[None, None, :, None]).astype(w[0].dtype)
    if unit.bn is None:
        w[1] = (w[1] + offset).astype(w[1].dtype)
    conv.set_weights(w)
    if unit.bn is not None:
        bn = unit.bn
        bn.moving_mean.assign((bn.moving_mean.numpy() - offset).astype(np.float32))
    folded = replace(pre, mean=(c, c, c), std=(k, k, k))
    return FoldedInput(copy, folded, ((0.0 - c) / k, (255.0 - c) / k), pre)
