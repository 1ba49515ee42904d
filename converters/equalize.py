"""Channel equalization before depthwise convolutions: each channel of a ReLU6 output spread over the int8 range.

A ReLU6 output that feeds a depthwise convolution is one int8 tensor with one scale, but its channels reach very
different maxima (MobileNetV2: the median channel stays 1.6-5.7x below the tensor's range), so most channels get
a few of the 256 steps. Channel c is scaled up by s_c = 6 / (H * M_c), M_c its largest value on the calibration
pictures (channels reaching 6 keep 1; at most 64), in the batch norm before the ReLU6, and the depthwise kernel's
channel c down by the same. The float model is unchanged wherever a channel stays below H times its calibration
maximum (above, ReLU6 clips it), and both layers are quantized per channel, so their int8 weights do not change: only
the activation between them gains resolution. The int8-aware tuning (converters/qat.py) then trains the weights in
their units before equalization (``channel_scale``), so its learning rate suits the shrunk depthwise kernels too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .qat import _Unit, _consumers, _out, weight_units

HEADROOM = 2.0  # H: how far above its calibration maximum a channel may go before ReLU6 clips it
MAX_SCALE = 64.0
CONSUMERS = ("depthwise",)  # which ReLU6 -> layer pairs are equalized: "depthwise", "conv" (any other weight layer)


@dataclass
class ChannelFactors:
    """The fixed per-channel factors equalization put into one weight layer's folded weights: ``out`` per output
    channel (kernel and bias), ``inp`` per input channel (kernel only). qat.fine_tune trains the weights without them."""
    out: np.ndarray | None = None
    inp: np.ndarray | None = None


def relu6_pairs(model, consumers: tuple[str, ...] = CONSUMERS) -> list[tuple[_Unit, Any]]:
    """(unit, consumer) for every conv -> batch norm -> ReLU6 whose output feeds one weight layer only: a depthwise
    convolution ("depthwise") or a convolution / dense layer ("conv")."""
    import keras

    pairs = []
    for u in weight_units(model):
        if u.bn is None or not u.bn.scale or not u.bn.center or not isinstance(u.act, keras.layers.ReLU) \
                or float(u.act.max_value or 0) != 6.0 or float(u.act.negative_slope) != 0.0 or float(u.act.threshold) != 0.0:
            continue
        nxt = _consumers(u.act, model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.ZeroPadding2D):
            nxt = _consumers(nxt[0], model)
        if len(nxt) != 1:
            continue
        c = nxt[0]
        if isinstance(c, keras.layers.DepthwiseConv2D):
            if "depthwise" in consumers and c.depth_multiplier == 1:
                pairs.append((u, c))
        elif isinstance(c, (keras.layers.Conv2D, keras.layers.Dense)) and "conv" in consumers:
            if not isinstance(c, keras.layers.Conv2D) or c.groups == 1:
                pairs.append((u, c))
    return pairs


def relu6_depthwise_pairs(model) -> list[tuple[_Unit, Any]]:
    return relu6_pairs(model, ("depthwise",))


def equalize(model, images: np.ndarray, headroom: float = HEADROOM, batch: int = 25,
             consumers: tuple[str, ...] = CONSUMERS) -> dict[str, ChannelFactors]:
    """Equalize ``model`` in place on float-preprocessed ``images``; returns layer name -> the factors its weights now
    carry (qat.fine_tune's ``channel_scale``). Empty when the model has no such ReLU6 pair."""
    import keras

    pairs = relu6_pairs(model, consumers)
    if not pairs:
        return {}
    probe = keras.Model(model.inputs, [keras.ops.max(_out(u.bn), axis=(1, 2)) for u, _ in pairs])
    maxima = probe.predict(images, batch_size=batch, verbose=0)
    if len(pairs) == 1:
        maxima = [maxima]
    factors: dict[str, ChannelFactors] = {}
    for (u, c), mx in zip(pairs, maxima):
        m = np.clip(np.asarray(mx).max(0), 0.0, 6.0)
        s = np.where((m > 1e-3) & (m < 6.0), 6.0 / (headroom * np.maximum(m, 1e-3)), 1.0)
        s = np.clip(s, 1.0, MAX_SCALE).astype(np.float32)
        u.bn.gamma.assign(u.bn.gamma.numpy() * s)
        u.bn.beta.assign(u.bn.beta.numpy() * s)
        w = c.get_weights()
        shape = (1, 1, -1, 1) if w[0].ndim == 4 else (-1, 1)
        w[0] = (w[0] / s.reshape(shape)).astype(w[0].dtype)
        c.set_weights(w)
        f = factors.setdefault(u.layer.name, ChannelFactors())
        f.out = s if f.out is None else (f.out * s).astype(np.float32)
        g = factors.setdefault(c.name, ChannelFactors())
        if isinstance(c, keras.layers.DepthwiseConv2D):
            # its channels are scaled as a whole (per output channel, as the shipped tuning has always trained them)
            g.out = (1.0 / s).astype(np.float32) if g.out is None else (g.out / s).astype(np.float32)
        else:
            g.inp = (1.0 / s).astype(np.float32)
    return factors
