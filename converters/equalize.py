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

from typing import Any

import numpy as np

from .qat import _Unit, _consumers, _out, weight_units

HEADROOM = 2.0  # H: how far above its calibration maximum a channel may go before ReLU6 clips it
MAX_SCALE = 64.0


def relu6_depthwise_pairs(model) -> list[tuple[_Unit, Any]]:
    """(unit, depthwise layer) for every conv -> batch norm -> ReLU6 whose output feeds one depthwise convolution only."""
    import keras

    pairs = []
    for u in weight_units(model):
        if u.bn is None or not u.bn.scale or not u.bn.center or not isinstance(u.act, keras.layers.ReLU) \
                or float(u.act.max_value or 0) != 6.0 or float(u.act.negative_slope) != 0.0 or float(u.act.threshold) != 0.0:
            continue
        nxt = _consumers(u.act, model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.ZeroPadding2D):
            nxt = _consumers(nxt[0], model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.DepthwiseConv2D) and nxt[0].depth_multiplier == 1:
            pairs.append((u, nxt[0]))
    return pairs


def equalize(model, images: np.ndarray, headroom: float = HEADROOM, batch: int = 25) -> dict[str, np.ndarray]:
    """Equalize ``model`` in place on float-preprocessed ``images``; returns layer name -> the per-output-channel factor
    its weights now carry (qat.fine_tune's ``channel_scale``). Empty when the model has no ReLU6 -> depthwise pair."""
    import keras

    pairs = relu6_depthwise_pairs(model)
    if not pairs:
        return {}
    probe = keras.Model(model.inputs, [keras.ops.max(_out(u.bn), axis=(1, 2)) for u, _ in pairs])
    maxima = probe.predict(images, batch_size=batch, verbose=0)
    if len(pairs) == 1:
        maxima = [maxima]
    scales: dict[str, np.ndarray] = {}
    for (u, dw), mx in zip(pairs, maxima):
        m = np.clip(np.asarray(mx).max(0), 0.0, 6.0)
        s = np.where((m > 1e-3) & (m < 6.0), 6.0 / (headroom * np.maximum(m, 1e-3)), 1.0)
        s = np.clip(s, 1.0, MAX_SCALE).astype(np.float32)
        u.bn.gamma.assign(u.bn.gamma.numpy() * s)
        u.bn.beta.assign(u.bn.beta.numpy() * s)
        w = dw.get_weights()
        w[0] = (w[0] / s.reshape(1, 1, -1, 1)).astype(w[0].dtype)
        dw.set_weights(w)
        scales[u.layer.name] = s
        scales[dw.name] = (1.0 / s).astype(np.float32)
    return scales
