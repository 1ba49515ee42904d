"""Quantization-aware fine-tuning: teach the weights to live with int8, using the float model as teacher.

Post-training int8 keeps MobileNetV2's embeddings (cosine 0.994) but flips the top-1 class on 5% of
pictures: the int8 weights alone cost 3 points, int8 activations 1-2 more, and no choice of ranges
or rounding recovers them. Here the model runs with int8 simulated exactly where TFLite puts it
(per-channel symmetric weights with batch norm folded in, per-tensor activations at every op
output, ranges from the calibration pictures) and its folded weights and biases are nudged for a
few passes over the calibration pictures so its outputs match the float model's. No labels are
needed: the float model's own outputs are the targets, so the int8 model is trained to agree with
it, not to be "more accurate" than it.

The tuned weights are written back into the Keras model already on the int8 grid (batch norm kept,
its shift carrying the tuned bias), so TFLite's ordinary converter reproduces them exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from edgeembed.progress import Progress

QMAX = 127  # TFLite per-channel weights: symmetric, narrow range [-127, 127]
_NO_QUANT = ("ZeroPadding2D", "Reshape", "Flatten", "Dropout", "InputLayer", "Activation")


@dataclass
class QatOptions:
    epochs: int = 3  # as `edgeembed convert --int8-tuning`
    batch: int = 16
    lr: float = 1e-5
    augment: bool = True
    seed: int = 0


@dataclass
class _Unit:
    """A weight layer, the batch norm TFLite folds into it, and the ReLU fused after it."""
    layer: Any
    bn: Any | None
    act: Any | None

    @property
    def last(self):
        return self.act or self.bn or self.layer


def _operations(model) -> list:
    """Every operation of a functional model in graph order: layers and the bare ops (``x + 3.0``) between them."""
    return list(getattr(model, "operations", model.layers))


def _out(op):
    return op._inbound_nodes[0].output_tensors[0]


def _consumers(layer, model) -> list:
    """The operations of ``model``'s own graph that take ``layer``'s output.

    Every symbolic use of a layer's output (a probe model over its activations, a converter's trace) adds
    a consumer to the layer, so consumers outside the model's graph are left out.
    """
    ops = [n.operation for n in getattr(layer, "_outbound_nodes", [])]
    own = {id(o) for o in _operations(model)}
    return list({id(o): o for o in ops if id(o) in own}.values())


def weight_units(model) -> list[_Unit]:
    """Conv2D / DepthwiseConv2D / Dense layers in graph order with their batch norm and ReLU."""
    import keras

    units = []
    for layer in model.layers:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)):
            continue
        bn = act = None
        if _own_activation(layer) is not None:  # Conv2D(activation="relu") then a batch norm: TFLite cannot fold
            units.append(_Unit(layer, None, None))  # the batch norm through the ReLU, so neither does the simulation
            continue
        nxt = _consumers(layer, model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.BatchNormalization):
            bn = nxt[0]
            nxt = _consumers(bn, model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.ReLU):
            act = nxt[0]
        units.append(_Unit(layer, bn, act))
    return units


def _own_activation(layer):
    """The layer's built-in activation (``Conv2D(activation="relu")``), or None when it has none (linear)."""
    import keras

    act = getattr(layer, "activation", None)
    return None if act is None or act is keras.activations.linear else act


def _is_dw(layer) -> bool:
    import keras

    return isinstance(layer, keras.layers.DepthwiseConv2D)


def _bn_factor(unit: _Unit, cout: int) -> tuple[np.ndarray, np.ndarray]:
    """(scale f, shift) of the unit's batch norm: bn(y) = y * f + shift."""
    if unit.bn is None:
        return np.ones(cout, np.float32), np.zeros(cout, np.float32)
    bn = unit.bn
    gamma = bn.gamma.numpy() if bn.scale else np.ones(cout, np.float32)
    beta = bn.beta.numpy() if bn.center else np.zeros(cout, np.float32)
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    f = (gamma / np.sqrt(var + bn.epsilon)).astype(np.float32)
    return f, (beta - mean * f).astype(np.float32)


class _Folded:
    """Trainable folded kernel and bias of one unit, and how to write them back."""

    def __init__(self, tf, unit: _Unit, scale: np.ndarray | None = None):
        """``scale``: a fixed factor per output channel the folded weights carry (channel equalization); the
        trained variables hold the weights without it, so the optimizer's steps keep their size."""
        self.unit = unit
        w = unit.layer.get_weights()
        kernel = w[0].astype(np.float32)
        self.dw = _is_dw(unit.layer)
        cout = kernel.shape[2] * kernel.shape[3] if self.dw else kernel.shape[-1]
        self.f, shift = _bn_factor(unit, cout)
        bias = w[1].astype(np.float32) if len(w) > 1 else np.zeros(cout, np.float32)
        self.scale = None if scale is None else np.asarray(scale, np.float32)
        div = 1.0 if self.scale is None else self.scale
        self.kernel = tf.Variable(kernel * self._shape(self.f / div, kernel))
        self.bias = tf.Variable((bias * self.f + shift) / div)
        self._kernel_scale = None if self.scale is None else self._shape(self.scale, kernel)

    def folded_bias(self):
        return self.bias if self.scale is None else self.bias * self.scale

    def _shape(self, v, kernel):
        if self.dw:
            return v.reshape(1, 1, kernel.shape[2], kernel.shape[3])
        return v.reshape((1,) * (kernel.ndim - 1) + (-1,))

    def folded_kernel(self, tf=None):
        """The folded kernel with equalization's factors, as the layer computes with it (before int8 rounding)."""
        return self.kernel if self._kernel_scale is None else self.kernel * self._kernel_scale

    def quantized_kernel(self, tf):
        k = self.folded_kernel()
        shape = tf.shape(k)
        flat = tf.reshape(k, (-1, shape[-2] * shape[-1])) if self.dw else tf.reshape(k, (-1, shape[-1]))
        m = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(flat), 0), 1e-12))
        q = tf.quantization.fake_quant_with_min_max_vars_per_channel(flat, -m, m, num_bits=8, narrow_range=True)
        return tf.reshape(q, shape)

    def write_back(self, tf) -> None:
        """Kernel on the int8 grid divided by the BN factor; BN shift (or bias) carrying the tuned bias."""
        layer, bn = self.unit.layer, self.unit.bn
        kq = self.quantized_kernel(tf).numpy()
        w = layer.get_weights()
        w[0] = (kq / self._shape(self.f, kq)).astype(np.float32)
        bias = np.asarray(self.folded_bias())
        if bn is None:
            if len(w) > 1:
                w[1] = bias
            layer.set_weights(w)
            return
        if len(w) > 1:
            w[1] = np.zeros_like(w[1])
        layer.set_weights(w)
        if not bn.center:  # no shift to carry the bias: keep it as it was
            return
        bn.beta.assign((bias + bn.moving_mean.numpy() * self.f).astype(np.float32))


def activation_ranges(model, images: np.ndarray, batch: int = 25) -> dict[int, tuple[float, float]]:
    """Per layer output, the mean over pictures of each picture's min and max (as the converter calibrates)."""
    import keras
    from keras import ops

    layers = [l for l in _operations(model) if type(l).__name__ not in _NO_QUANT]
    outs = []
    for l in layers:
        t = _out(l)
        axes = tuple(range(1, len(t.shape)))
        outs += [ops.min(t, axis=axes), ops.max(t, axis=axes)]
    stats = keras.Model(model.inputs, outs).predict(images, batch_size=batch, verbose=0)
    # The model's outputs keep their full range, as the converter keeps them: clipping the logits
    # would flatten the top classes into ties.
    final = {id(t) for t in model.outputs}
    ranges = {}
    for i, l in enumerate(layers):
        lo, hi = stats[2 * i], stats[2 * i + 1]
        lo, hi = (lo.min(), hi.max()) if id(_out(l)) in final else (lo.mean(), hi.mean())
        ranges[id(l)] = (float(min(lo, 0.0)), float(max(hi, 0.0)))
    return ranges


def apply_unit(tf, unit: _Unit, x, kernel, bias):
    """One unit on ``x`` with a folded ``kernel`` and ``bias``: its convolution (or matmul), its own activation, then
    its ReLU."""
    import keras

    layer = unit.layer
    if _is_dw(layer):
        y = tf.nn.depthwise_conv2d(x, kernel, (1, *layer.strides, 1), layer.padding.upper())
    elif isinstance(layer, keras.layers.Dense):
        y = tf.matmul(x, kernel)
    else:
        y = tf.nn.conv2d(x, kernel, layer.strides, layer.padding.upper())
    y = y + bias
    own = _own_activation(layer)  # built into the layer (it was left out: a Conv2D(activation="relu") ran linear)
    if own is not None:
        y = own(y)
    return unit.act(y) if unit.act is not None else y


def _forward_fn(tf, model, units: list[_Unit], folded: dict[int, _Folded], ranges: dict[int, tuple[float, float]],
                input_range: tuple[float, float]) -> Callable:
    """model's graph with int8 simulated: weights per channel, activations at each op output."""
    import keras

    by_first = {id(u.layer): u for u in units}
    skipped = {id(x) for u in units for x in (u.bn, u.act) if x is not None}

    def fq(x, r):
        return tf.quantization.fake_quant_with_min_max_vars(x, r[0], r[1], num_bits=8)

    def forward(x):
        values = {id(model.inputs[0]): fq(x, input_range)}
        for layer in _operations(model):
            if isinstance(layer, keras.layers.InputLayer) or id(layer) in skipped:
                continue
            node = layer._inbound_nodes[0]
            if id(layer) in by_first:
                unit = by_first[id(layer)]
                fd = folded[id(layer)]
                xin = values[id(node.input_tensors[0])]
                y = apply_unit(tf, unit, xin, fd.quantized_kernel(tf), fd.folded_bias())
                values[id(_out(unit.last))] = fq(y, ranges[id(unit.last)])
                continue
            args, kwargs = node.arguments.fill_in(values)
            y = layer(*args, **kwargs)
            if type(layer).__name__ not in _NO_QUANT:
                y = fq(y, ranges[id(layer)])
            values[id(_out(layer))] = y
        out = model.outputs
        return [values[id(t)] for t in out]

    return forward


def fine_tune(model, images: np.ndarray, options: QatOptions | None = None, show_progress: bool = True,
              log: Callable[[str], None] | None = None, held: np.ndarray | None = None,
              input_range: tuple[float, float] | None = None,
              channel_scale: dict[str, np.ndarray] | None = None) -> dict:
    """Fine-tune ``model`` (in place) for int8 on float-preprocessed ``images``; returns a summary.

    ``held``: optional held-aside pictures on which the simulated int8 agreement is logged per epoch.
    ``input_range``: the int8 input's float range, as given to quantize.to_tflite (default: the images').
    ``channel_scale``: layer name -> the per-output-channel factor its folded weights carry (converters/equalize.py).
    """
    import keras
    import tensorflow as tf

    o = options or QatOptions()
    rng = np.random.default_rng(o.seed)
    teacher = [np.asarray(a) for a in _as_list(model.predict(images, batch_size=32, verbose=0))]
    held_teacher = ([np.asarray(a) for a in _as_list(model.predict(held, batch_size=32, verbose=0))]
                    if held is not None else None)
    var = [float(np.var(t)) or 1.0 for t in teacher]
    units = weight_units(model)
    if not units:
        return {"epochs": 0, "images": int(len(images)), "skipped": "no Conv2D, DepthwiseConv2D or Dense layer to tune"}
    folded = {id(u.layer): _Folded(tf, u, (channel_scale or {}).get(u.layer.name)) for u in units}
    ranges = activation_ranges(model, images)
    if input_range is None:
        input_range = (float(min(images.min(), 0.0)), float(max(images.max(), 0.0)))
    forward = _forward_fn(tf, model, units, folded, ranges, input_range)
    params = [v for fd in folded.values() for v in (fd.kernel, fd.bias)]
    steps = int(np.ceil(len(images) / o.batch))
    # cosine decay to zero: the last steps only settle the weights, so the result does not depend on
    # where the last noisy step happened to leave them
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(o.lr, max(o.epochs * steps, 1)))

    @tf.function(reduce_retracing=True)
    def step(x, targets):
        with tf.GradientTape() as tape:
            outs = forward(x)
            # every output (embedding, logits) matched to the float model's, each scaled by its variance
            loss = tf.add_n([tf.reduce_mean(tf.square(a - t)) / v for a, t, v in zip(outs, targets, var)])
        opt.apply_gradients(zip(tape.gradient(loss, params), params))
        return loss

    infer = tf.function(forward, reduce_retracing=True)
    summary: dict = {"epochs": o.epochs, "lr": o.lr, "batch": o.batch, "images": int(len(images)), "loss": []}
    if held is not None:
        summary["held"] = []

    def agreement(data, ref):
        if ref is None or len(ref) < 2:
            return None
        outs = [np.concatenate(c) for c in zip(*[[a.numpy() for a in infer(tf.constant(data[i:i + 50]))]
                                                 for i in range(0, len(data), 50)])]
        if log:
            loss = sum(float(np.mean((a - t) ** 2)) / v for a, t, v in zip(outs, ref, var))
            log(f"held-aside simulated loss {loss:.4f}")
        return float((outs[1].argmax(1) == ref[1].argmax(1)).mean())

    start = agreement(held, held_teacher)
    if start is not None:
        summary["held"].append(start)
        if log:
            log(f"simulated int8 top-1 agreement on held-aside pictures before tuning: {start:.3f}")
    size = images.shape[1:3]

    @tf.function(reduce_retracing=True)
    def augment(x, boxes):
        # random crops (60-100% of each side) and mirror images, resized back: 500 calibration
        # pictures become many different views, so the tuning does not just learn those pictures
        return tf.image.crop_and_resize(x, boxes, tf.range(tf.shape(x)[0]), size)

    for epoch in range(o.epochs):
        order = rng.permutation(len(images))
        losses = []
        with Progress(steps, f"int8-aware tuning {epoch + 1}/{o.epochs}", show_progress) as bar:
            for s in range(steps):
                idx = np.sort(order[s * o.batch:(s + 1) * o.batch])
                x = images[idx]
                if o.augment:
                    n = len(x)
                    side = rng.uniform(0.6, 1.0, (n, 2))
                    y0, x0 = rng.uniform(0, 1 - side[:, 0]), rng.uniform(0, 1 - side[:, 1])
                    boxes = np.stack([y0, x0, y0 + side[:, 0], x0 + side[:, 1]], 1)
                    flip = rng.random(n) < 0.5
                    boxes[flip] = boxes[flip][:, [0, 3, 2, 1]]  # x1 < x0 mirrors the crop
                    x = augment(tf.constant(x), tf.constant(boxes, tf.float32))
                    tgt = [tf.constant(np.asarray(a)) for a in _as_list(model(x, training=False))]
                else:
                    x = tf.constant(x)
                    tgt = [tf.constant(t[idx]) for t in teacher]
                losses.append(float(step(x, tgt)))
                bar.update()
        summary["loss"].append(round(float(np.mean(losses)), 5))
        a = agreement(held, held_teacher)
        if a is not None:
            summary["held"].append(a)
        if log:
            log(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}" + (f", simulated held-aside agreement {a:.3f}" if a is not None else ""))
    for fd in folded.values():
        fd.write_back(tf)
    return summary


def _as_list(out) -> list:
    """Model outputs in model.outputs order (Keras flattens a dict of outputs by sorted key)."""
    import keras

    return list(keras.tree.flatten(out))
