"""Keras 3 architectures whose pooled feature vector is the embedding.

MobileNetV1/V2/V3 come from ``keras.applications`` (random or ``imagenet`` weights); MobileNetV2
for torchvision weights and EfficientNet-Lite0..4 are built here layer by layer, recording which
PyTorch state-dict prefix each Keras layer takes its weights from (see torch_weights.py).
``pad`` chooses how a stride-2 convolution pads: "same" is TensorFlow's asymmetric padding,
"torch" the symmetric ``padding=k//2`` of PyTorch, which checkpoints trained in PyTorch need.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from edgeembed.errors import InputError

MOBILENETS = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large")
# width, depth, default input size (Google's EfficientNet-Lite table); stem 32 and head 1280 are fixed.
EFFICIENTNET_LITE = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}
ARCHS = MOBILENETS + tuple(EFFICIENTNET_LITE)
# (repeats, kernel, stride, expand, in, out) for EfficientNet(-Lite)-B0.
_EFFNET_BLOCKS = [
    (1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320),
]
# (expand t, channels c, repeats n, stride s) for MobileNetV2.
_MBV2_BLOCKS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@dataclass
class Built:
    """A Keras model with outputs ``[embedding]`` or ``[embedding, logits]`` and how to fill it."""

    model: Any
    arch: str
    input_size: int
    embedding_dim: int
    torch_map: list[tuple[str, str, str]] = field(default_factory=list)  # (keras layer, torch prefix, kind)
    has_classifier: bool = False


def default_size(arch: str) -> int:
    return EFFICIENTNET_LITE[arch][2] if arch in EFFICIENTNET_LITE else 224


def check_arch(arch: str) -> None:
    if arch not in ARCHS:
        raise InputError(f"unknown architecture {arch!r}; choose one of: {', '.join(ARCHS)}")


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels as torchvision and TF-slim do (never more than 10% down)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return int(new_v)


class _Builder:
    """Adds conv/bn layers and records their torch prefixes."""

    def __init__(self, pad: str, bn_eps: float):
        import keras

        self.L = keras.layers
        self.pad = pad
        self.eps = bn_eps
        self.map: list[tuple[str, str, str]] = []

    def conv(self, x, filters: int, k: int, s: int, prefix: str, name: str, depthwise: bool = False):
        padding = "same"
        if self.pad == "torch" and k > 1:
            x = self.L.ZeroPadding2D(k // 2, name=name + "_pad")(x)
            padding = "valid"
        if depthwise:
            layer = self.L.DepthwiseConv2D(k, s, padding=padding, use_bias=False, name=name)
        else:
            layer = self.L.Conv2D(filters, k, s, padding=padding, use_bias=False, name=name)
        self.map.append((name, prefix, "dw" if depthwise else "conv"))
        return layer(x)

    def bn(self, x, prefix: str, name: str, relu6: bool = True):
        x = self.L.BatchNormalization(epsilon=self.eps, name=name)(x)
        self.map.append((name, prefix, "bn"))
        return self.L.ReLU(6.0, name=name + "_relu6")(x) if relu6 else x

    def dense(self, x, units: int, prefix: str, name: str):
        self.map.append((name, prefix, "dense"))
        return self.L.Dense(units, name=name)(x)


def _finish(keras, inputs, emb, logits, keep_classifier: bool, name: str):
    outputs = {"embedding": emb}
    if keep_classifier and logits is not None:
        outputs["logits"] = logits
    return keras.Model(inputs, outputs, name=name)


def mobilenet_v2_torch(size: int = 224, alpha: float = 1.0, keep_classifier: bool = False, classes: int = 1000) -> Built:
    """torchvision's MobileNetV2 layout (symmetric padding, BN eps 1e-5)."""
    import keras

    b = _Builder("torch", 1e-5)
    inputs = keras.Input((size, size, 3), name="image")
    c_in = make_divisible(32 * alpha)
    x = b.conv(inputs, c_in, 3, 2, "features.0.0", "stem_conv")
    x = b.bn(x, "features.0.1", "stem_bn")
    i = 1
    for t, c, n, s in _MBV2_BLOCKS:
        c_out = make_divisible(c * alpha)
        for r in range(n):
            stride = s if r == 0 else 1
            p = f"features.{i}.conv"
            y, j = x, 0
            hidden = c_in * t
            if t != 1:
                y = b.conv(y, hidden, 1, 1, f"{p}.0.0", f"b{i}_expand")
                y = b.bn(y, f"{p}.0.1", f"b{i}_expand_bn")
                j = 1
            y = b.conv(y, hidden, 3, stride, f"{p}.{j}.0", f"b{i}_dw", depthwise=True)
            y = b.bn(y, f"{p}.{j}.1", f"b{i}_dw_bn")
            y = b.conv(y, c_out, 1, 1, f"{p}.{j + 1}", f"b{i}_project")
            y = b.bn(y, f"{p}.{j + 2}", f"b{i}_project_bn", relu6=False)
            x = keras.layers.Add(name=f"b{i}_add")([x, y]) if stride == 1 and c_in == c_out else y
            c_in = c_out
            i += 1
    last = make_divisible(1280 * max(1.0, alpha))
    x = b.conv(x, last, 1, 1, f"features.{i}.0", "head_conv")
    x = b.bn(x, f"features.{i}.1", "head_bn")
    emb = keras.layers.GlobalAveragePooling2D(name="embedding_pool")(x)
    logits = b.dense(emb, classes, "classifier.1", "classifier") if keep_classifier else None
    model = _finish(keras, inputs, emb, logits, keep_classifier, f"mobilenet_v2_{alpha}_{size}")
    return Built(model, "mobilenet_v2", size, last, b.map, keep_classifier)


def efficientnet_lite(arch: str, size: int | None = None, keep_classifier: bool = False, pad: str = "same",
                      classes: int = 1000) -> Built:
    """EfficientNet-Lite: EfficientNet without squeeze-excite, ReLU6, fixed 32-channel stem and 1280 head.

    Layer prefixes follow the ``efficientnet-lite-pytorch`` state dicts (``_conv_stem``, ``_blocks.N``...).
    """
    import keras

    width, depth, dsize = EFFICIENTNET_LITE[arch]
    size = size or dsize
    b = _Builder(pad, 1e-3)
    inputs = keras.Input((size, size, 3), name="image")
    x = b.conv(inputs, 32, 3, 2, "_conv_stem", "stem_conv")
    x = b.bn(x, "_bn0", "stem_bn")
    idx = 0
    for stage, (n, k, s, e, c_in, c_out) in enumerate(_EFFNET_BLOCKS):
        c_in = c_in if stage == 0 else make_divisible(c_in * width)
        c_out = make_divisible(c_out * width)
        if 0 < stage < len(_EFFNET_BLOCKS) - 1:  # Lite keeps the first and last stage at one block
            n = int(math.ceil(n * depth))
        for r in range(n):
            stride = s if r == 0 else 1
            cin = c_in if r == 0 else c_out
            p = f"_blocks.{idx}"
            y = x
            if e != 1:
                y = b.conv(y, cin * e, 1, 1, f"{p}._expand_conv", f"b{idx}_expand")
                y = b.bn(y, f"{p}._bn0", f"b{idx}_expand_bn")
            y = b.conv(y, cin * e, k, stride, f"{p}._depthwise_conv", f"b{idx}_dw", depthwise=True)
            y = b.bn(y, f"{p}._bn1", f"b{idx}_dw_bn")
            y = b.conv(y, c_out, 1, 1, f"{p}._project_conv", f"b{idx}_project")
            y = b.bn(y, f"{p}._bn2", f"b{idx}_project_bn", relu6=False)
            x = keras.layers.Add(name=f"b{idx}_add")([x, y]) if stride == 1 and cin == c_out else y
            idx += 1
    x = b.conv(x, 1280, 1, 1, "_conv_head", "head_conv")
    x = b.bn(x, "_bn1", "head_bn")
    emb = keras.layers.GlobalAveragePooling2D(name="embedding_pool")(x)
    logits = b.dense(emb, classes, "_fc", "classifier") if keep_classifier else None
    model = _finish(keras, inputs, emb, logits, keep_classifier, f"{arch}_{size}")
    return Built(model, arch, size, 1280, b.map, keep_classifier)


def keras_application(arch: str, size: int = 224, alpha: float = 1.0, weights: str | None = None,
                      keep_classifier: bool = False) -> Built:
    """MobileNetV1/V2/V3 from keras.applications; ``weights`` None (random) or "imagenet" (downloads)."""
    import keras

    A = keras.applications
    common = dict(input_shape=(size, size, 3), alpha=alpha, include_top=True, weights=weights, classes=1000,
                  classifier_activation=None)
    if arch == "mobilenet_v1":
        base = A.MobileNet(**common)
    elif arch == "mobilenet_v2":
        base = A.MobileNetV2(**common)
    elif arch == "mobilenet_v3_small":
        base = A.MobileNetV3Small(**common, include_preprocessing=False)
    elif arch == "mobilenet_v3_large":
        base = A.MobileNetV3Large(**common, include_preprocessing=False)
    else:
        raise InputError(f"{arch} is not in keras.applications; choose one of: {', '.join(MOBILENETS)}")
    layers = base.layers
    if arch.startswith("mobilenet_v3"):  # the 1024/1280-d hard-swish feature before the last dropout (TF-Hub's)
        feat = [l for l in layers if isinstance(l, keras.layers.Dropout)][-1].input
    else:
        feat = [l for l in layers if isinstance(l, keras.layers.GlobalAveragePooling2D)][-1].output
    if len(feat.shape) == 4:  # (1, 1, C) -> (C,) by a MEAN over one cell: Flatten/Reshape add a SHAPE op (dynamic
        feat = keras.layers.GlobalAveragePooling2D(name="embedding_flat")(feat)  # batch) the Edge TPU cannot map
    model = _finish(keras, base.inputs, feat, base.outputs[0], keep_classifier, f"{arch}_{alpha}_{size}")
    return Built(model, arch, size, int(feat.shape[-1]), [], keep_classifier)


def set_batch_norm_statistics(model, pixels) -> int:
    """Set every batch norm's moving mean and variance from one forward pass over ``pixels`` (normalised input).

    For random (untrained) weights only: their initial statistics (mean 0, variance 1) do not match what the random
    convolutions produce, activations shrink block after block (MobileNetV2 ends near 1e-6) and int8 rounds the
    embedding to all zeros. Returns how many batch norms were set."""
    import warnings

    import keras

    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    kept = [n.momentum for n in norms]
    try:
        for n in norms:
            n.momentum = 0.0  # moving = batch statistics
        with warnings.catch_warnings():  # keras.applications' models take a list of one input; one array is the same
            warnings.filterwarnings("ignore", r"The structure of `inputs` doesn't match the expected structure",
                                    UserWarning)
            model(pixels, training=True)
    finally:
        for n, m in zip(norms, kept):
            n.momentum = m
    return len(norms)
