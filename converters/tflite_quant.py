"""Float .tflite in -> int8 .tflite out, calibrated on the inputs the model will really see.

For models that exist only as .tflite (third-party face embedders such as MobileFaceNet)
there is no Keras/SavedModel for TensorFlow's converter, so the float graph is rebuilt op
by op as a TensorFlow function from the flatbuffer (checked against the .tflite to 1e-3 of
its output range) and converted to full-integer int8 (int8 input and output, per-channel
weights), the path the Edge TPU and XNNPACK run best. (``ai-edge-quantizer`` 0.10, which
quantizes the flatbuffer directly, produced an unloadable MobileFaceNet here: its first
convolution got asymmetric weights.) Face models are calibrated on aligned face crops made
by the runtime's own detector and alignment (converters.faces), so the ranges match the
device. The result carries an ``edgeembed`` ModelSpec: preprocessing, alignment template,
calibration and fidelity.

    edgeembed convert --tflite FLOAT.tflite --calibration-faces FOLDER --out OUT.tflite
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgeembed.errors import InputError, ModelError, require
from edgeembed.spec import METADATA_NAME, ModelSpec
from edgeembed.tflite_file import read_tflite, write_metadata

_ACTIVATIONS = {0: None, 1: "relu", 2: "relu_n1_to_1", 3: "relu6"}


@dataclass
class _Graph:
    """The float model's subgraph 0: tensors (shape, constant data or None), operators in order."""

    tensors: list[tuple[str, tuple[int, ...], np.ndarray | None]]
    ops: list[tuple[str, Any, list[int], list[int]]]
    inputs: list[int]
    outputs: list[int]


def read_graph(model_bytes: bytes) -> _Graph:
    """Parse a float .tflite with LiteRT's flatbuffer schema (ships with ai-edge-litert)."""
    from ai_edge_litert.tools import flatbuffer_utils  # noqa: PLC0415

    try:
        model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    except Exception as exc:  # noqa: BLE001 - any parse failure means the same thing to the user
        raise ModelError(f"not a readable .tflite model ({exc})") from None
    if len(model.subgraphs) != 1:
        raise ModelError(f"expected a model with one subgraph, got {len(model.subgraphs)}")
    sub = model.subgraphs[0]
    tensors = []
    for t in sub.tensors:
        shape = tuple(int(v) for v in t.shape) if t.shape is not None else ()
        name = t.name.decode() if isinstance(t.name, bytes) else str(t.name)
        buf = model.buffers[t.buffer] if t.buffer is not None and t.buffer < len(model.buffers) else None
        data = None
        if buf is not None and buf.data is not None and len(buf.data):
            if t.type not in (0, 2):  # FLOAT32, INT32
                raise ModelError(f"tensor {name!r} is already quantized (type {t.type}); give the float .tflite")
            data = np.frombuffer(bytes(buf.data), np.float32 if t.type == 0 else np.int32).reshape(shape)
        tensors.append((name, shape, data))
    ops = [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), op.builtinOptions, list(op.inputs), list(op.outputs))
           for op in sub.operators]
    return _Graph(tensors, ops, list(sub.inputs), list(sub.outputs))


def fuse_prelu(graph: _Graph) -> _Graph:
    """Rewrite ``max(x, 0) + gamma * min(x, 0)`` (PReLU as MXNet exports it) into one PRELU op.

    Quantized op by op, that pattern is four int8 ops that lose precision (mean cosine to the
    float embeddings 0.859 vs 0.897 as PRELU, MobileFaceNet on aligned ORL crops).
    """
    producer = {outs[0]: k for k, (_, _, _, outs) in enumerate(graph.ops)}
    consumers: dict[int, int] = {}
    for _, _, ins, _ in graph.ops:
        for i in ins:
            consumers[i] = consumers.get(i, 0) + 1

    def is_zero(i: int) -> bool:
        d = graph.tensors[i][2]
        return d is not None and d.size == 1 and float(d.reshape(-1)[0]) == 0.0

    def nonzero_input(ins: list[int]) -> int | None:
        if len(ins) == 2 and is_zero(ins[0]):
            return ins[1]
        if len(ins) == 2 and is_zero(ins[1]):
            return ins[0]
        return None

    ops = list(graph.ops)
    drop: set[int] = set()
    for k, (name, opts, ins, outs) in enumerate(graph.ops):
        if name != "ADD" or (getattr(opts, "fusedActivationFunction", 0) or 0) != 0 or len(ins) != 2:
            continue
        for a, b in ((ins[0], ins[1]), (ins[1], ins[0])):
            ka, kb = producer.get(a), producer.get(b)
            if ka is None or kb is None or graph.ops[ka][0] != "MAXIMUM" or graph.ops[kb][0] != "MUL":
                continue
            x = nonzero_input(graph.ops[ka][2])
            mul_ins = graph.ops[kb][2]
            gamma = next((i for i in mul_ins if graph.tensors[i][2] is not None), None)
            other = next((i for i in mul_ins if i != gamma), None)
            km = producer.get(other) if other is not None else None
            if (x is None or gamma is None or km is None or graph.ops[km][0] != "MINIMUM"
                    or nonzero_input(graph.ops[km][2]) != x or graph.tensors[gamma][2].ndim > 1):
                continue
            if any(consumers.get(t, 0) != 1 for t in (a, b, other)):
                continue
            ops[k] = ("PRELU", None, [x, gamma], outs)
            drop |= {ka, kb, km}
            break
    return _Graph(graph.tensors, [op for k, op in enumerate(ops) if k not in drop], graph.inputs, graph.outputs)


def rebuild_in_tensorflow(graph: _Graph):
    """The float graph as a TensorFlow function, op by op (for TensorFlow's int8 converter).

    Supports the ops of CNN embedders (MobileFaceNet and the like): CONV_2D,
    DEPTHWISE_CONV_2D, FULLY_CONNECTED, PAD, ADD, SUB, MUL, MAXIMUM, MINIMUM, RESHAPE,
    MEAN, RELU, RELU6, PRELU, L2_NORMALIZATION, LOGISTIC.
    """
    tf = require("tensorflow", "convert", "quantizing a .tflite")

    def act(x, opts):
        kind = _ACTIVATIONS.get(getattr(opts, "fusedActivationFunction", 0) or 0, "unsupported")
        if kind is None:
            return x
        if kind == "relu":
            return tf.nn.relu(x)
        if kind == "relu6":
            return tf.nn.relu6(x)
        if kind == "relu_n1_to_1":
            return tf.clip_by_value(x, -1.0, 1.0)
        raise ModelError(f"unsupported fused activation {opts.fusedActivationFunction}")

    def padding(opts) -> str:
        return "SAME" if opts.padding == 0 else "VALID"

    graph = fuse_prelu(graph)
    unsupported = sorted({name for name, *_ in graph.ops} - set(_OPS))
    if unsupported:
        raise ModelError(f"cannot rebuild ops {unsupported} for quantization; supported: {', '.join(_OPS)}")
    (in_index,) = graph.inputs
    prelus = {}  # op position -> Keras PReLU layer (the form TensorFlow's converter fuses into one PRELU kernel)
    for k, (name, _, ins, _) in enumerate(graph.ops):
        if name == "PRELU" and graph.tensors[ins[1]][2] is not None:
            alpha = np.asarray(graph.tensors[ins[1]][2], np.float32).reshape(-1)
            shape = graph.tensors[ins[0]][1]
            layer = tf.keras.layers.PReLU(shared_axes=list(range(1, len(shape) - 1)) or None)
            layer.build((None, *shape[1:]))
            layer.set_weights([np.broadcast_to(alpha, layer.get_weights()[0].shape).copy()])
            prelus[k] = layer

    producer = {outs[0]: (name, opts, ins) for name, opts, ins, outs in graph.ops}
    uses: dict[int, int] = {}
    for _, _, ins, _ in graph.ops:
        for i in ins:
            uses[i] = uses.get(i, 0) + 1
    split_prelus = {}  # op position -> (convolution name, options, inputs, alpha per output channel)
    for k, (name, _, ins, _) in enumerate(graph.ops):
        if name != "PRELU" or ins[0] not in producer or uses.get(ins[0]) != 1 or graph.tensors[ins[1]][2] is None:
            continue
        cname, copts, cins = producer[ins[0]]
        c = graph.tensors[ins[0]][1][-1]
        alpha = np.broadcast_to(np.asarray(graph.tensors[ins[1]][2], np.float32).reshape(-1), (c,))
        if (cname in ("CONV_2D", "DEPTHWISE_CONV_2D") and (getattr(copts, "fusedActivationFunction", 0) or 0) == 0
                and graph.tensors[cins[1]][2] is not None):
            split_prelus[k] = (cname, copts, cins, alpha.copy())

    def forward(x):
        values: dict[int, Any] = {in_index: x}

        def get(i: int):
            if i not in values:
                name, shape, data = graph.tensors[i]
                if data is None:
                    raise ModelError(f"tensor {name!r} is used before it is computed")
                values[i] = tf.constant(data)
            return values[i]

        def conv(name: str, opts: Any, ins: list[int], scale: np.ndarray | None = None):
            """The convolution, its output channels multiplied by ``scale`` if given (weights are constants)."""
            w, b = graph.tensors[ins[1]][2], graph.tensors[ins[2]][2] if len(ins) > 2 and ins[2] >= 0 else None
            if w is None:
                raise ModelError(f"{name} with computed weights is not supported")
            if name == "CONV_2D":
                w = w.transpose(1, 2, 3, 0)  # OHWI -> HWIO
            else:
                w = w.reshape(w.shape[1], w.shape[2], graph.tensors[ins[0]][1][-1], opts.depthMultiplier)  # 1HW(CM) -> HWCM
            if scale is not None:
                w = w * scale.reshape(w.shape[2:]) if name != "CONV_2D" else w * scale
                b = b * scale if b is not None else None
            x = get(ins[0])
            if name == "CONV_2D":
                y = tf.nn.conv2d(x, tf.constant(w.astype(np.float32)), [1, opts.strideH, opts.strideW, 1], padding(opts),
                                 dilations=[1, opts.dilationHFactor, opts.dilationWFactor, 1])
            else:
                y = tf.nn.depthwise_conv2d(x, tf.constant(w.astype(np.float32)), [1, opts.strideH, opts.strideW, 1],
                                           padding(opts), dilations=[opts.dilationHFactor, opts.dilationWFactor])
            return y + tf.constant(b.astype(np.float32)) if b is not None else y

        for k, (name, opts, ins, outs) in enumerate(graph.ops):
            if k in split_prelus:
                # PReLU after a convolution v = conv(x): relu(v) - alpha * relu(-v), with -v computed by the
                # same convolution negated. Both convolutions carry a fused relu, the rest is a MUL and a
                # SUB: XNNPACK runs all of it in int8, where an int8 PRELU falls back to LiteRT's slow
                # broadcasting kernel (6 conv+PReLU layers at 56x56x32: 2.0 ms this way, 7.2 ms as PRELU).
                cname, copts, cins, alpha = split_prelus[k]
                neg = tf.nn.relu(conv(cname, copts, cins, -np.ones_like(alpha)))
                values[outs[0]] = tf.nn.relu(conv(cname, copts, cins)) - tf.constant(alpha) * neg
                continue
            if k in prelus:
                values[outs[0]] = prelus[k](get(ins[0]))
                continue
            a = [get(i) if i >= 0 else None for i in ins]
            if name in ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM"):
                fn = {"ADD": tf.add, "SUB": tf.subtract, "MUL": tf.multiply, "MAXIMUM": tf.maximum, "MINIMUM": tf.minimum}[name]
                y = act(fn(a[0], a[1]), opts)
            elif name == "PAD":
                y = tf.pad(a[0], a[1])
            elif name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                y = act(conv(name, opts, ins), opts)
            elif name == "FULLY_CONNECTED":
                w = a[1]
                y = tf.matmul(tf.reshape(a[0], [-1, w.shape[1]]), w, transpose_b=True)
                y = act(y + a[2] if len(a) > 2 and a[2] is not None else y, opts)
                if getattr(opts, "keepNumDims", False):
                    y = tf.reshape(y, list(a[0].shape[:-1]) + [w.shape[0]])
            elif name == "RESHAPE":
                y = tf.reshape(a[0], graph.tensors[outs[0]][1])
            elif name == "MEAN":
                y = tf.reduce_mean(a[0], axis=a[1], keepdims=bool(getattr(opts, "keepDims", False)))
            elif name == "RELU":
                y = tf.nn.relu(a[0])
            elif name == "RELU6":
                y = tf.nn.relu6(a[0])
            elif name == "PRELU":
                y = tf.maximum(a[0], 0.0) + a[1] * tf.minimum(a[0], 0.0)
            elif name == "LOGISTIC":
                y = tf.sigmoid(a[0])
            else:  # L2_NORMALIZATION
                y = tf.math.l2_normalize(a[0], axis=-1)
            values[outs[0]] = y
        return values[graph.outputs[0]]

    shape = graph.tensors[in_index][1]
    return tf.function(forward, input_signature=[tf.TensorSpec([1, *shape[1:]], tf.float32)])


_OPS = ("ADD", "SUB", "MUL", "MAXIMUM", "MINIMUM", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "RESHAPE",
        "MEAN", "RELU", "RELU6", "PRELU", "LOGISTIC", "L2_NORMALIZATION")


def quantize_tflite(model_bytes: bytes, calibration: np.ndarray, spec: ModelSpec | None = None,
                    int8_io: bool = True, show_progress: bool = True) -> bytes:
    """Full-integer int8 quantization of a float .tflite, calibrated on ``calibration``.

    ``calibration``: (N, H, W, 3) float inputs exactly as the float model takes them. The
    float graph is rebuilt in TensorFlow (checked against the .tflite on the calibration
    inputs) and converted by TensorFlow's int8 converter. Returns the int8 model, with
    ``spec`` (fidelity figures added) in its edgeembed metadata.
    """
    return quantize_tflite_report(model_bytes, calibration, spec, int8_io)[0]


def quantize_tflite_report(model_bytes: bytes, calibration: np.ndarray, spec: ModelSpec | None = None,
                           int8_io: bool = True, activation_ranges: str = "minmax") -> tuple[bytes, dict[str, float]]:
    """``quantize_tflite`` plus its fidelity figures: the rebuild's max error and the int8 model's
    cosine to the float model's outputs on (up to 8 of) the calibration inputs.

    ``activation_ranges``: minmax (TFLite's), mean, mse or pNN, as converters.quantize.to_tflite.
    """
    from converters.quantize import _ranges_patch  # noqa: PLC0415 - the converters' shared range methods
    tf = require("tensorflow", "convert", "quantizing a .tflite")
    from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415

    graph = read_graph(model_bytes)
    fn = rebuild_in_tensorflow(graph)
    in_shape = graph.tensors[graph.inputs[0]][1]
    if tuple(calibration.shape[1:]) != tuple(in_shape[1:]):
        raise InputError(f"calibration inputs are {tuple(calibration.shape[1:])}, the model takes {tuple(in_shape[1:])}")
    ref = Interpreter(model_content=model_bytes, num_threads=1)
    ref.allocate_tensors()
    ri, ro = ref.get_input_details()[0]["index"], ref.get_output_details()[0]["index"]

    def float_out(x: np.ndarray) -> np.ndarray:
        ref.set_tensor(ri, x[None].astype(np.float32))
        ref.invoke()
        return ref.get_tensor(ro).reshape(-1)

    probe = calibration[: min(8, len(calibration))]
    rebuilt_err = max(float(np.abs(fn(tf.constant(x[None], tf.float32)).numpy().reshape(-1) - float_out(x)).max()) for x in probe)
    scale = max(1e-6, max(float(np.abs(float_out(x)).max()) for x in probe))
    if rebuilt_err > 1e-3 * scale:
        raise ModelError(f"the TensorFlow rebuild of the model differs from the .tflite by {rebuilt_err:.3g}; not quantizing")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None].astype(np.float32)] for x in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with _ranges_patch(activation_ranges, False):
        out = converter.convert()

    q = Interpreter(model_content=out, num_threads=1)
    q.allocate_tensors()
    qi, qo = q.get_input_details()[0], q.get_output_details()[0]
    cos = []
    for x in probe:
        s, z = qi["quantization"]
        xi = np.clip(np.rint(x / s + z), -128, 127).astype(np.int8) if s else x.astype(np.float32)
        q.set_tensor(qi["index"], xi[None])
        q.invoke()
        y = q.get_tensor(qo["index"]).reshape(-1).astype(np.float32)
        s, z = qo["quantization"]
        y = (y - z) * s if s else y
        f = float_out(x)
        cos.append(float(y @ f / (np.linalg.norm(y) * np.linalg.norm(f) + 1e-12)))
    fidelity = {"rebuild_max_abs_error": round(rebuilt_err, 8), "int8_vs_float_cosine_mean": round(float(np.mean(cos)), 5),
                "int8_vs_float_cosine_min": round(float(np.min(cos)), 5), "probe_inputs": int(len(probe))}
    if spec is not None:
        spec = replace(spec, fidelity={**(spec.fidelity or {}), **fidelity})
        out = write_metadata(out, {METADATA_NAME: spec.to_json().encode("utf-8")})
    return out, fidelity


def quantize_face_model(float_path: str | os.PathLike, out_path: str | os.PathLike, calibration_faces: str | os.PathLike,
                        limit: int | None = 100, mean: float | Sequence[float] | None = None, std: float | Sequence[float] | None = None,
                        detector: str = "short", show_progress: bool = True,
                        crops: np.ndarray | None = None, activation_ranges: str = "mean") -> dict[str, Any]:
    """A float face embedder -> int8, calibrated on aligned crops of the faces in ``calibration_faces``.

    ``crops``: (N, H, W, 3) RGB uint8 face crops already aligned for the model (e.g. dlib's
    chips) to calibrate on instead; ``calibration_faces`` then only names them in the metadata.

    The preprocessing and alignment template come from the float model's metadata if it has
    one, else raw 0..255 pixels and the default template (see edgeembed.face). Returns a
    summary (crops used, sizes, seconds). Defaults: 100 photos, "mean" activation ranges (each
    activation's range is the mean of its per-crop extremes, so a few outlier crops do not
    stretch it). Measured with MobileFaceNet, ORL K=1 recall@1 on dlib-aligned chips (float
    0.994, shared uint8 file 0.925) and mean cosine to the float embeddings on s21..s40:
    minmax/50 crops 0.958, 0.878; mean/50 0.975, 0.919; mean/100 0.986, 0.916; mse/200 0.989,
    0.912 (benchmarks/bench_face_int8.py).
    """
    from converters.faces import aligned_face_crops  # noqa: PLC0415

    t0 = time.perf_counter()
    src = Path(float_path)
    data, (h, w), template, base = open_float_face_model(src, mean, std)
    if crops is None:
        crops = aligned_face_crops(calibration_faces, (h, w), template, limit=limit or 100, detector=detector,
                                   show_progress=show_progress)
    out, spec, fidelity = quantize_face_crops(data, crops, base, template, str(calibration_faces), activation_ranges)
    from converters import metadata  # noqa: PLC0415

    dest = Path(out_path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # a reader sees the old files or the new ones, never half, nor a model beside another one's JSON
    metadata.write_model_and_json(dest, out, metadata.fidelity_json_text(dest, spec.architecture, spec.weights,
                                                                         spec.calibration, fidelity))
    return {"model": str(out_path), "from": str(src), "calibration_crops": int(len(crops)), "fidelity": fidelity,
            "bytes_float": len(data), "bytes_int8": len(out), "seconds": round(time.perf_counter() - t0, 1),
            "preprocessing": asdict(spec.preprocessing)}


def open_float_face_model(path: str | os.PathLike, mean: float | Sequence[float] | None = None,
                          std: float | Sequence[float] | None = None):
    """(model bytes, (h, w), alignment template, spec) of a float face embedder, as face mode opens it."""
    from edgeembed.face.align import template_for  # noqa: PLC0415
    from edgeembed.face.recognizer import open_face_model  # noqa: PLC0415

    src = Path(path)
    if not src.exists():
        raise ModelError(f"model not found: {src} (give a float face embedding .tflite)")
    data = src.read_bytes()
    read_tflite(data, str(src))
    with open_face_model(src, mean=mean, std=std, num_threads=1) as emb:
        h, w = emb.preprocessor.size
        return data, (h, w), template_for(emb.spec.extra, (h, w)), emb.spec


def quantize_face_crops(data: bytes, crops: np.ndarray, base: ModelSpec, template, source: str,
                        activation_ranges: str = "mean") -> tuple[bytes, ModelSpec, dict[str, float]]:
    """(int8 model, its spec, probe figures): the float face model ``data`` calibrated on aligned RGB uint8 ``crops``."""
    from edgeembed.preprocess import InputFormat, Preprocessor  # noqa: PLC0415

    h, w = template.size
    pre = base.preprocessing
    if crops.ndim != 4 or tuple(crops.shape[1:3]) != (h, w):
        raise InputError(f"calibration crops must be (N, {h}, {w}, 3) aligned faces, got {tuple(crops.shape)}")
    batch = crops[..., ::-1] if pre.color_order == "BGR" else crops
    tensor = Preprocessor(pre, InputFormat(h, w, np.dtype(np.float32)))(list(batch))
    extra = dict(base.extra)
    extra["face_alignment"] = {"keypoints": list(template.keypoints), "template": np.round(template.points, 4).tolist()}
    spec = ModelSpec(preprocessing=pre, embedding_output=base.embedding_output, task="face",
                     architecture=base.architecture, weights=base.weights, license=base.license,
                     calibration={"source": source, "images": int(len(crops)), "faces": int(len(crops)),
                                  "kind": "aligned face crops",
                                  "method": "TensorFlow full-integer post-training quantization of the rebuilt float graph",
                                  "activation_ranges": activation_ranges},
                     extra=extra)
    out, fidelity = quantize_tflite_report(data, tensor, spec, activation_ranges=activation_ranges)
    return out, replace(spec, fidelity={**(spec.fidelity or {}), **fidelity}), fidelity


def main(argv: Sequence[str] | None = None) -> int:
    """The module's former command line: it quantized without the fidelity gate, so it now says what replaces it."""
    print("python -m converters.tflite_quant is replaced by: edgeembed convert --tflite FLOAT.tflite "
          "--calibration-faces FOLDER --out OUT.tflite (the same quantization, with the fidelity report and gate)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
