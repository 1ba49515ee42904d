"""Keras model -> .tflite bytes: float32, float16, dynamic-range or full-integer int8/uint8.

Full-integer conversion is post-training quantization with per-channel weights, int8 inside and
int8 (or uint8) at the input and outputs. The representative dataset is built from the user's
pictures with the runtime's own Preprocessor, so calibration sees exactly what the device will feed.
"""
from __future__ import annotations

import contextlib
import io as io_
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgeembed.errors import InputError, ModelError, require
from edgeembed.backends import _quiet_native_stderr
from edgeembed.preprocess import InputFormat, Preprocessor, list_images
from edgeembed.progress import Progress
from edgeembed.spec import Preprocessing

OUTPUT_TYPES = ("int8", "uint8", "float32", "float16", "dynamic")


def float_preprocessor(pre: Preprocessing, size: int | tuple[int, int]) -> Preprocessor:
    """The runtime's preprocessing, producing the float tensor the float model takes."""
    h, w = (size, size) if isinstance(size, int) else size
    return Preprocessor(pre, InputFormat(h, w, np.dtype(np.float32)))


def calibration_images(folder: str | os.PathLike, limit: int | None = None, recursive: bool = True,
                       flag: str = "calibration") -> list[Path]:
    """Image files of a calibration folder (sub-folders included), spread evenly if there are more than ``limit``.

    ``flag`` names the folder in errors (``--fidelity-dir`` for the held-aside pictures)."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{flag} folder not found: {root} (give a folder of pictures like those the model will see)")
    files = list_images(root, recursive=recursive)
    if not files:
        raise InputError(f"no images in the {flag} folder {root} (expected .jpg/.png/... files)")
    if limit and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in idx]
    return files


def load_pixels(files: Sequence[str | os.PathLike], prep: Preprocessor, desc: str = "reading images",
                show_progress: bool = True) -> np.ndarray:
    """Pictures resized as ``prep`` resizes them: one uint8 batch (N, H, W, 3), with a progress bar."""
    out = []
    with Progress(len(files), desc, show_progress) as bar:
        for f in files:
            out.append(prep.resized(f))
            bar.update()
    return np.stack(out) if out else np.zeros((0, *prep.size, 3), np.uint8)


def load_batch(files: Sequence[str | os.PathLike], prep: Preprocessor, desc: str = "reading images",
               show_progress: bool = True) -> np.ndarray:
    """Preprocess pictures into one float32 batch (N, H, W, 3), with a progress bar."""
    return prep.normalize(load_pixels(files, prep, desc, show_progress))


def _representative(batches: Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]], show_progress: bool):
    """A representative_dataset generator yielding one sample at a time with a progress bar."""
    def gen():
        source = batches() if callable(batches) else batches
        samples = [row for batch in source for row in np.asarray(batch, np.float32)]
        if not samples:
            raise InputError("the calibration set is empty; give a folder with pictures")
        with Progress(len(samples), "calibrating", show_progress) as bar:
            for row in samples:
                yield [row[None]]
                bar.update()
    return gen


def to_tflite(keras_model: Any, calibration_batches: Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]] | None,
              output_type: str = "int8", show_progress: bool = True, activation_ranges: str = "minmax",
              input_range: tuple[float, float] | None = None) -> bytes:
    """Convert a Keras model (one image input, NHWC float) to .tflite bytes.

    ``calibration_batches``: float32 arrays (N, H, W, 3) already preprocessed for the float model
    (see :func:`load_batch`); needed for int8/uint8. Outputs keep the model's output order.
    ``activation_ranges``: how calibration turns observed activations into int8 ranges:
    "minmax" (TFLite's default: the extremes over all pictures), "mean" (the mean over pictures of
    each picture's extremes, as TF's moving-average observers do: rare outliers no longer stretch
    the scale for every picture), "mse" (per tensor, the clipped range with the least int8
    error on sampled values) or "pNN" (the NN-th percentile of the per-picture extremes).
    ``input_range``: the float range the integer input spans, whatever the calibration pictures hold
    (converters.input_fold: pixels 0..255, so that the input holds each pixel exactly).
    """
    if output_type not in OUTPUT_TYPES:
        raise InputError(f"output type must be one of {', '.join(OUTPUT_TYPES)}, got {output_type!r}")
    tf = require("tensorflow", "convert", "converting models")
    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    if output_type == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif output_type == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif output_type in ("int8", "uint8"):
        if calibration_batches is None:
            raise InputError(f"{output_type} conversion needs calibration pictures (--calibration DIR)")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = _representative(calibration_batches, show_progress)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io = tf.int8 if output_type == "int8" else tf.uint8
        conv.inference_input_type = io
        conv.inference_output_type = io
    # the converter's native lines ("fully_quantize: 0, ...", the calibrator's "Created ... XNNPACK delegate") go with
    # --quiet; with a progress bar on stderr they stay (hiding them would hide the bar)
    native = contextlib.nullcontext() if show_progress else _quiet_native_stderr()
    try:
        with contextlib.redirect_stdout(io_.StringIO()), _ranges_patch(activation_ranges, show_progress, input_range), \
                native:
            return bytes(conv.convert())
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError and friends
        raise ModelError(f"TFLite conversion failed: {conversion_failure(str(exc)) or exc.__class__.__name__}") from None


def conversion_failure(text: str) -> str:
    """The line of a TFLite converter error that says why: the ops it has no kernel for, else its first 'error:'
    (its last line is often a fragment of the MLIR dump)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ops = [line for line in lines if line.startswith(("TF Select ops:", "Flex ops:", "Custom ops:"))]
    if ops:
        return (f"no TFLite {'int8 ' if 'int8' in text.lower() else ''}kernel for {'; '.join(ops)} (replace those layers "
                "or that part of the model)")
    for line in lines:
        if "error:" in line:
            reason = line.split("error:", 1)[1].strip()
            if reason.startswith("loc("):  # the op's location in the graph, then ': ' and the reason
                reason = reason.rsplit("): ", 1)[-1]
            if reason and not reason.startswith("failed while converting"):
                return reason[:300]
    return lines[-1][:300] if lines else ""


@contextlib.contextmanager
def _ranges_patch(mode: str, show_progress: bool, input_range: tuple[float, float] | None = None):
    """Post-process TFLite's calibration statistics (see to_tflite) before the model is quantized."""
    if mode == "minmax" and input_range is None:
        yield
        return
    if mode not in ("minmax", "mean", "mse") and not (mode.startswith("p") and mode[1:].replace(".", "", 1).isdigit()):
        raise InputError(f"activation ranges must be minmax, mean or pNN (a percentile), got {mode!r}")
    from tensorflow.lite.python import lite

    cls = lite._calibrator.Calibrator  # noqa: SLF001 - the calibrator has no public hook
    orig = cls.calibrate

    def calibrate(self, dataset_gen):
        samples: list = []

        def recording():
            for s in dataset_gen():
                samples.append(s)
                yield s
        calibrated = orig(self, recording)
        return _adjust_ranges(calibrated, [s[0] for s in samples], mode, show_progress, input_range)

    cls.calibrate = calibrate
    try:
        yield
    finally:
        cls.calibrate = orig


def _adjust_ranges(calibrated: bytes, samples: list[np.ndarray], mode: str, show_progress: bool,
                   input_range: tuple[float, float] | None = None) -> bytes:
    """Replace each activation's min/max by the mean (or a percentile) of its per-picture extremes."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    model = fu.read_model_from_bytearray(bytearray(calibrated))
    sg = model.subgraphs[0]
    if input_range is not None:
        for i in sg.inputs:
            qp = sg.tensors[int(i)].quantization
            qp.min, qp.max = [float(input_range[0])], [float(input_range[1])]
        if mode == "minmax":
            return bytes(fu.convert_object_to_bytearray(model))
    # The input keeps its full range (every pixel value must be representable), and so do the
    # outputs: clipping the classifier's logits flattens the top classes into ties.
    keep = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
    idx = [i for i, t in enumerate(sg.tensors) if t.quantization is not None and t.quantization.min is not None
           and len(t.quantization.min) == 1 and i not in keep]
    interp = _litert()(model_content=bytes(calibrated), experimental_preserve_all_tensors=True)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    lo = np.zeros((len(samples), len(idx)), np.float32)
    hi = np.zeros_like(lo)
    rng = np.random.default_rng(0)
    kept: list[list[np.ndarray]] = [[] for _ in idx]  # value samples for the "mse" search
    with Progress(len(samples), "activation ranges", show_progress) as bar:
        for n, x in enumerate(samples):
            interp.set_tensor(inp, np.asarray(x, np.float32))
            interp.invoke()
            for j, t in enumerate(idx):
                v = interp.get_tensor(t)
                lo[n, j], hi[n, j] = v.min(), v.max()
                if mode == "mse" and n % 4 == 0:
                    flat = v.reshape(-1)
                    kept[j].append(flat[rng.integers(0, flat.size, min(flat.size, 4096))])
            bar.update()
    if mode == "mse":  # per tensor, the clipping range with the least int8 error on the sampled values
        new_lo, new_hi = lo.min(0), hi.max(0)
        for j in range(len(idx)):
            vals = np.concatenate(kept[j]).astype(np.float32)
            best, best_err = 1.0, None
            for frac in np.linspace(0.3, 1.0, 15):
                a, b = min(new_lo[j] * frac, 0.0), max(new_hi[j] * frac, 0.0)
                scale = (b - a) / 255.0 or 1.0
                qv = np.clip(np.rint((vals - a) / scale), 0, 255) * scale + a
                err = float(np.mean((qv - vals) ** 2))
                if best_err is None or err < best_err:
                    best, best_err = frac, err
            new_lo[j], new_hi[j] = new_lo[j] * best, new_hi[j] * best
    elif mode == "mean":
        new_lo, new_hi = lo.mean(0), hi.mean(0)
    else:
        q = float(mode[1:])
        new_lo, new_hi = np.percentile(lo, 100 - q, axis=0), np.percentile(hi, q, axis=0)
    for j, t in enumerate(idx):
        qp = sg.tensors[t].quantization
        qp.min = [float(min(new_lo[j], 0.0))]
        qp.max = [float(max(new_hi[j], 0.0))]
    return bytes(fu.convert_object_to_bytearray(model))


def _litert():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover
        Interpreter = require("tensorflow", "convert").lite.Interpreter
    return Interpreter


class TFLiteRunner:
    """Runs a .tflite on float-preprocessed batches and returns dequantized float outputs.

    Integer inputs are quantized from the float tensor, so float and int8 models are fed the
    same preprocessed pictures; a batch already of the input's integer type goes in as it is.
    Used for fidelity checks (the device path is edgeembed.Embedder).
    """

    def __init__(self, model: bytes, num_threads: int = 1):
        self.interp = _litert()(model_content=model, num_threads=num_threads)
        self.interp.allocate_tensors()
        self.inp = self.interp.get_input_details()[0]
        self.outs = self.interp.get_output_details()

    def output_index(self, dim: int) -> int:
        """Index of the first output with ``dim`` values per image."""
        for i, d in enumerate(self.outs):
            if int(np.prod(d["shape"][1:])) == dim:
                return i
        raise ModelError(f"no output of size {dim}; outputs: {[tuple(d['shape']) for d in self.outs]}")

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        results: list[list[np.ndarray]] = [[] for _ in self.outs]
        scale, zp = self.inp["quantization"]
        dtype = self.inp["dtype"]
        for row in batch:
            if row.dtype == dtype:  # already the model's input (e.g. the runtime's Preprocessor output)
                x = row[None]
            elif np.issubdtype(dtype, np.integer):
                info = np.iinfo(dtype)
                x = np.clip(np.rint(row[None].astype(np.float32) / scale + zp), info.min, info.max).astype(dtype)
            else:
                x = row[None].astype(dtype)
            self.interp.set_tensor(self.inp["index"], x)
            self.interp.invoke()
            for i, d in enumerate(self.outs):
                v = self.interp.get_tensor(d["index"]).reshape(-1)
                s, z = d["quantization"]
                results[i].append((v.astype(np.float32) - z) * s if s else v.astype(np.float32))
        return [np.stack(r) for r in results]
