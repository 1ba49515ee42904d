"""Learned rounding of int8 weights (AdaRound) on calibration pictures - a study, not used by the converter (see README here).

TFLite rounds every weight to the nearest step of its channel's int8 grid. Nearest is not best:
for MobileNetV2 the int8 weights alone cost 3 points of top-1 agreement with the float model.
AdaRound (Nagel et al., 2020) chooses, layer by layer, whether each weight rounds up or down so
that the layer's output on real pictures stays closest to the float model's, feeding each layer
the output of the layers already rounded so errors don't pile up.

The result is a float Keras model whose (batch-norm folded) weights already lie on the grid that
TFLite's per-channel symmetric quantizer will compute (the largest weight of each channel is kept,
so the scale is unchanged): the converter then quantizes them to exactly the integers chosen here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeembed.progress import Progress

ZETA, GAMMA = 1.1, -0.1  # rectified sigmoid stretch (AdaRound)
QMAX = 127  # TFLite per-channel weights: symmetric, narrow range [-127, 127]


@dataclass
class RoundingOptions:
    iters: int = 1000  # Adam steps per layer
    lr: float = 1e-2
    reg_weight: float = 0.01  # lambda of the rounding regularizer
    warmup: float = 0.2  # fraction of steps without the regularizer
    beta: tuple[float, float] = (20.0, 2.0)  # regularizer annealing
    rows: int = 4096  # output positions per step
    budget: int = 48_000_000  # floats of stored layer inputs per layer
    max_images: int = 128
    seed: int = 0


from converters.qat import _Unit, weight_units  # noqa: E402 - the same layer walk as the converter's tuning


def _fold(unit: _Unit) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(folded kernel, folded bias, per-output-channel BN factor) as TFLite folds them."""
    import keras

    w = unit.layer.get_weights()
    kernel = w[0].astype(np.float32)
    bias = w[1].astype(np.float32) if len(w) > 1 else None
    dw = isinstance(unit.layer, keras.layers.DepthwiseConv2D)
    cout = kernel.shape[2] * kernel.shape[3] if dw else kernel.shape[-1]
    f = np.ones(cout, np.float32)
    b = bias if bias is not None else np.zeros(cout, np.float32)
    if unit.bn is not None:
        bw = unit.bn.get_weights()
        gamma, beta, mean, var = (bw if len(bw) == 4 else (np.ones_like(bw[-1]), *bw))
        f = (gamma / np.sqrt(var + unit.bn.epsilon)).astype(np.float32)
        b = (beta + (b - mean) * f).astype(np.float32)
    return kernel * _bcast(f, unit.layer, kernel), b, f


def _bcast(v: np.ndarray, layer, kernel: np.ndarray) -> np.ndarray:
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return v.reshape(1, 1, kernel.shape[2], kernel.shape[3])
    return v.reshape((1,) * (kernel.ndim - 1) + (-1,))


def _channel_axes(layer, kernel: np.ndarray) -> tuple[int, ...]:
    import keras

    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return (0, 1)  # TFLite's depthwise kernel is [1, kh, kw, C*mult]: one scale per output channel
    return tuple(range(kernel.ndim - 1))


def _apply(unit: _Unit, kernel_folded: np.ndarray, f: np.ndarray) -> None:
    w = unit.layer.get_weights()
    w[0] = (kernel_folded / _bcast(f, unit.layer, kernel_folded)).astype(np.float32)
    unit.layer.set_weights(w)


def _forward(tf, unit: _Unit, x, kernel, bias, rows_mode: bool):
    import keras

    layer = unit.layer
    if rows_mode:  # 1x1 conv or dense on sampled positions: a matmul
        y = tf.matmul(x, tf.reshape(kernel, (-1, kernel.shape[-1]))) + bias
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
        y = tf.nn.depthwise_conv2d(x, kernel, (1, *layer.strides, 1), layer.padding.upper(),
                                   dilations=layer.dilation_rate) + bias
    else:
        y = tf.nn.conv2d(x, kernel, layer.strides, layer.padding.upper(), dilations=layer.dilation_rate) + bias
    if unit.act is not None:
        a = unit.act
        y = tf.maximum(y, float(a.negative_slope) * y) if a.negative_slope else tf.maximum(y, float(a.threshold))
        if a.max_value is not None:
            y = tf.minimum(y, float(a.max_value))
    return y


def round_weights(model, calibration: np.ndarray, options: RoundingOptions | None = None,
                  show_progress: bool = True, log=None) -> dict:
    """Round every weight layer of ``model`` in place with AdaRound; returns a summary.

    ``calibration``: float-preprocessed pictures (N, H, W, 3), the ones used for activation ranges.
    """
    import keras
    import tensorflow as tf

    o = options or RoundingOptions()
    rng = np.random.default_rng(o.seed)
    tf.random.set_seed(o.seed)
    ref = keras.models.clone_model(model)
    ref.set_weights(model.get_weights())
    units = weight_units(model)
    ref_units = {u.layer.name: u for u in weight_units(ref)}
    inputs = model.inputs[0]
    summary = {"layers": 0, "mse_nearest": [], "mse_learned": [], "flipped": 0, "weights": 0}
    with Progress(len(units), "learning int8 rounding", show_progress) as bar:
        for unit in units:
            kernel, bias, f = _fold(unit)
            axes = _channel_axes(unit.layer, kernel)
            scale = np.abs(kernel).max(axis=axes, keepdims=True) / QMAX
            if not np.all(np.isfinite(kernel)):
                bar.update()
                continue
            scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
            rows_mode = isinstance(unit.layer, keras.layers.Dense) or (
                not isinstance(unit.layer, keras.layers.DepthwiseConv2D) and kernel.shape[0] == kernel.shape[1] == 1
                and tuple(unit.layer.strides) == (1, 1))
            x_shape = tuple(int(d) for d in unit.layer.input.shape[1:])
            per_image = int(np.prod(x_shape))
            n = int(np.clip(o.budget // max(per_image, 1), 8, min(o.max_images, len(calibration))))
            pick = np.sort(rng.choice(len(calibration), n, replace=False))
            batch = calibration[pick]
            x = keras.Model(inputs, unit.layer.input).predict(batch, batch_size=16, verbose=0)
            ru = ref_units[unit.layer.name]
            y = keras.Model(ref.inputs[0], ru.last.output).predict(batch, batch_size=16, verbose=0)
            if rows_mode:
                x = x.reshape(-1, x.shape[-1])
                y = y.reshape(-1, y.shape[-1])
            learned, mse_near, mse_learn = _adaround(tf, unit, x, y, kernel, bias, scale, rows_mode, o, rng)
            nearest = np.clip(np.round(kernel / scale), -QMAX, QMAX)
            summary["flipped"] += int((learned != nearest).sum())
            summary["weights"] += int(learned.size)
            summary["mse_nearest"].append(mse_near)
            summary["mse_learned"].append(mse_learn)
            summary["layers"] += 1
            _apply(unit, learned * scale, f)
            if log is not None:
                log(f"{unit.layer.name}: output MSE nearest {mse_near:.3g} -> learned {mse_learn:.3g}")
            bar.update()
    summary["mse_ratio_median"] = float(np.median(np.array(summary["mse_learned"]) /
                                                  np.maximum(summary["mse_nearest"], 1e-30)))
    return summary


def _adaround(tf, unit: _Unit, x: np.ndarray, y: np.ndarray, kernel: np.ndarray, bias: np.ndarray,
              scale: np.ndarray, rows_mode: bool, o: RoundingOptions, rng) -> tuple[np.ndarray, float, float]:
    """One layer: learn up/down for each weight; returns (integer kernel, MSE nearest, MSE learned)."""
    w_floor = np.floor(kernel / scale)
    rest = kernel / scale - w_floor
    v0 = -np.log((ZETA - GAMMA) / (np.clip(rest, 1e-4, 1 - 1e-4) - GAMMA) - 1)
    v = tf.Variable(v0.astype(np.float32))
    s = tf.constant(scale)
    fl = tf.constant(w_floor.astype(np.float32))
    b = tf.constant(bias)
    m1 = tf.Variable(tf.zeros_like(v))
    m2 = tf.Variable(tf.zeros_like(v))
    t_step = tf.Variable(0.0)
    count = len(x)
    if rows_mode:
        take = min(o.rows, count)
    else:
        positions = int(np.prod(y.shape[1:3]))
        take = int(np.clip(o.rows // max(positions, 1), 1, count))

    def h():
        return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)

    def kernel_of(soft):
        return s * tf.clip_by_value(fl + soft, -QMAX, QMAX)

    @tf.function
    def step(xb, yb, beta, reg):
        with tf.GradientTape() as tape:
            out = _forward(tf, unit, xb, kernel_of(h()), b, rows_mode)
            rec = tf.reduce_mean(tf.reduce_sum(tf.reshape(tf.square(out - yb), (tf.shape(out)[0], -1)), 1))
            hv = h()
            round_loss = reg * tf.reduce_sum(1.0 - tf.pow(tf.abs(2.0 * hv - 1.0), beta))
            loss = rec + round_loss
        g = tape.gradient(loss, v)
        t_step.assign_add(1.0)  # Adam, written out: one variable, no optimizer state to juggle
        m1.assign(0.9 * m1 + 0.1 * g)
        m2.assign(0.999 * m2 + 0.001 * tf.square(g))
        mh = m1 / (1.0 - tf.pow(0.9, t_step))
        vh = m2 / (1.0 - tf.pow(0.999, t_step))
        v.assign_sub(o.lr * mh / (tf.sqrt(vh) + 1e-8))
        return rec

    warm = int(o.iters * o.warmup)
    for i in range(o.iters):
        idx = rng.integers(0, count, take)
        if i < warm:
            beta, reg = o.beta[0], 0.0
        else:
            t = (i - warm) / max(o.iters - warm, 1)
            beta, reg = o.beta[1] + 0.5 * (o.beta[0] - o.beta[1]) * (1 + np.cos(np.pi * t)), o.reg_weight
        step(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(beta, tf.float32), tf.constant(reg, tf.float32))
    learned = np.clip(w_floor + (h().numpy() >= 0.5), -QMAX, QMAX)
    nearest = np.clip(np.round(kernel / scale), -QMAX, QMAX)

    def mse(k):
        idx = np.arange(min(count, take * 4))
        out = _forward(tf, unit, tf.constant(x[idx]), tf.constant((k * scale).astype(np.float32)), b, rows_mode)
        return float(np.mean((out.numpy() - y[idx]) ** 2))
    return learned.astype(np.float32), mse(nearest), mse(learned)
