"""ModelSpec: what the runtime must know about a model, carried inside the .tflite itself.

The converters write it as a JSON metadata entry named ``edgeembed``; the runtime reads it
back. Models without it (third-party files) get their normalisation from the standard
TFLITE_METADATA when present, else defaults chosen by input dtype. Users can override any
field. The spec is the contract between the two halves of the project.
"""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import InputError, ModelError
from .tflite_file import EDGEEMBED_ENTRY, EDGEEMBED_ENTRY_CAP, METADATA_FIX

METADATA_NAME = EDGEEMBED_ENTRY
SPEC_VERSION = 1
TASKS = ("image", "face")
MAX_METADATA_DEPTH = 64  # real metadata nests 4 levels; deeper JSON broke the parser (RecursionError at 100,000)
RESIZE_MODES = ("center_crop", "letterbox", "stretch")
COLOR_ORDERS = ("RGB", "BGR")


@dataclass(frozen=True)
class Preprocessing:
    """How a picture becomes the model's input: ``(pixel - mean) / std`` after resizing.

    ``pixel`` is in 0..255 in ``color_order``. For a quantized input the normalised value is
    then quantized with the input tensor's scale and zero point.
    """

    mean: tuple[float, float, float] = (127.5, 127.5, 127.5)
    std: tuple[float, float, float] = (127.5, 127.5, 127.5)
    color_order: str = "RGB"
    resize: str = "center_crop"
    crop_fraction: float = 1.0  # centre crop keeps this fraction of the short side (0.875 = ImageNet eval)
    interpolation: str = "auto"  # auto (area when shrinking, linear when enlarging) | linear | area | nearest | cubic

    def __post_init__(self):
        object.__setattr__(self, "mean", _triple(self.mean, "mean"))
        object.__setattr__(self, "std", _triple(self.std, "std"))
        if any(not s >= 1e-3 for s in self.std):  # negative: the negative picture; tiny: overflow to inf
            raise InputError(f"std must be positive (at least 0.001, in 0..255 pixel units), got {self.std}")
        if self.color_order not in COLOR_ORDERS:
            raise InputError(f"color order must be one of {COLOR_ORDERS}, got {self.color_order!r}")
        if self.resize not in RESIZE_MODES:
            raise InputError(f"resize mode must be one of {RESIZE_MODES}, got {self.resize!r}")
        if not 0.0 < float(self.crop_fraction) <= 1.0:
            raise InputError(f"crop fraction must be in (0, 1], got {self.crop_fraction}")
        if self.interpolation not in ("auto", "linear", "area", "nearest", "cubic"):
            raise InputError(f"interpolation must be auto, linear, area, nearest or cubic, got {self.interpolation!r}")


def _triple(value: Any, name: str) -> tuple[float, float, float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    try:
        if isinstance(value, (str, bytes, bool)):
            raise TypeError
        vals = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be 1 or 3 numbers (pixel units, 0..255), got {value!r}") from None
    if len(vals) == 1:
        return vals * 3
    if len(vals) != 3:
        raise InputError(f"{name} must be 1 or 3 numbers, got {len(vals)}: {value!r}")
    if not all(math.isfinite(v) for v in vals):  # NaN would turn every picture into a NaN vector
        raise InputError(f"{name} must be finite numbers, got {value!r}")
    return vals  # type: ignore[return-value]


@dataclass(frozen=True)
class ModelSpec:
    """Everything about a model that is not in its tensors."""

    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    embedding_output: int | str | None = None  # output tensor name or index; None = the first output
    embedding_dim: int | None = None
    task: str = "image"  # "image" (whole-picture embedding) or "face" (an aligned face crop)
    architecture: str | None = None
    weights: str | None = None
    license: str | None = None
    calibration: dict | None = None
    fidelity: dict | None = None
    extra: dict = field(default_factory=dict)
    source: str = "defaults"  # where it came from: edgeembed metadata, tflite metadata, defaults

    def to_json(self) -> str:
        d = asdict(self)
        d.pop("source")
        d["spec_version"] = SPEC_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "edgeembed-metadata") -> "ModelSpec":
        d = dict(d)
        d.pop("spec_version", None)
        d.pop("source", None)
        pre = Preprocessing(**d.pop("preprocessing", {}))
        known = {f for f in cls.__dataclass_fields__}
        extra = dict(d.pop("extra", {}) or {})
        extra.update({k: v for k, v in d.items() if k not in known})
        d = {k: v for k, v in d.items() if k in known}
        return cls(preprocessing=pre, extra=extra, source=source, **d)

    def with_overrides(self, **pre_overrides: Any) -> "ModelSpec":
        """A copy with the given Preprocessing fields replaced (None values are ignored)."""
        changes = {k: v for k, v in pre_overrides.items() if v is not None}
        if not changes:
            return self
        return replace(self, preprocessing=replace(self.preprocessing, **changes))

    def preprocessing_key(self) -> str:
        return preprocessing_key(asdict(self.preprocessing))


def preprocessing_key(preprocessing: dict) -> str:
    """The preprocessing as model fingerprints hash it (from a Preprocessing's fields, or a gallery's stored copy)."""
    return json.dumps(preprocessing, sort_keys=True)


def fingerprint_of(model_bytes: bytes, preprocessing: dict) -> str:
    """Names a model as the runtime uses it: the model bytes plus the preprocessing applied."""
    h = hashlib.sha256(model_bytes)
    h.update(preprocessing_key(preprocessing).encode())
    return h.hexdigest()[:20]


def check_std_units(std: Any, flag: str = "--std") -> None:
    """Refuse a std typed in 0..1 units (PyTorch's ImageNet 0.229,0.224,0.225): edgeembed's are pixel units, and such
    values gave silently wrong embeddings. For what a user types; a gallery's stored values are taken as they are."""
    try:
        stds = [float(v) for v in (std if isinstance(std, (list, tuple)) else [std])]
    except (TypeError, ValueError):
        return  # said with the expected form where the preprocessing is built
    if stds and all(0.001 <= v < 1 for v in stds):  # below 0.001 is refused as out of range where it is built
        raise InputError(
            f"{flag} {','.join(f'{v:g}' for v in stds)} looks like 0..1 units, but edgeembed's mean and std are in pixel "
            "units 0..255 (the model sees (pixel - mean) / std): multiply both by 255, e.g. ImageNet's --mean "
            "123.675,116.28,103.53 --std 58.395,57.12,57.375")


def default_preprocessing(dtype_name: str, quantization: tuple[float, int]) -> Preprocessing:
    """Defaults for a model with no metadata, by input dtype.

    Quantized integer inputs get the raw pixels (the Coral and TF1-QAT convention: the input
    quantization already maps 0..255 to the model's range), i.e. mean = zero point and
    std = 1/scale, so quantization gives back the pixel. Float inputs get [-1, 1], the
    convention of MobileNet and EfficientNet-Lite TFLite models.
    """
    scale, zero_point = quantization
    if dtype_name in ("uint8", "int8") and scale:
        offset = 128 if dtype_name == "int8" else 0
        return Preprocessing(mean=(zero_point + offset,) * 3, std=(1.0 / scale,) * 3)
    return Preprocessing()


def _unusable(name: str, what: str) -> ModelError:
    return ModelError(f"{name} has unusable edgeembed metadata: {what}; {METADATA_FIX}")


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def metadata_json(blob: bytes, name: str = "model") -> dict:
    """The JSON object of a model's edgeembed metadata entry. The file is anyone's: an entry that is too large, not
    UTF-8 JSON, nested absurdly deep or not an object is one ModelError naming the file."""
    if len(blob) > EDGEEMBED_ENTRY_CAP:
        raise _unusable(name, f"{len(blob):,} bytes of it, where a real model holds a few KB")
    try:
        d = json.loads(blob.decode("utf-8"))
    except RecursionError:
        raise _unusable(name, "its JSON is nested too deeply to describe a model") from None
    except ValueError as exc:  # UnicodeDecodeError is one too
        raise _unusable(name, f"it is not UTF-8 JSON ({' '.join(str(exc).split())[:120]})") from None
    if not isinstance(d, dict):
        raise _unusable(name, f"it is a JSON {type(d).__name__}, not an object")
    stack: list[tuple[Any, int]] = [(d, 1)]
    while stack:  # asdict and json.dumps recurse into it later: refuse what they cannot walk
        value, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise _unusable(name, f"its JSON nests more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
    return d


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def checked_spec(d: dict, name: str = "model") -> ModelSpec:
    """The ModelSpec of a model's edgeembed metadata, every value the runtime uses checked for its type and range: a
    threshold of "abc" or NaN became 0.5 for a face gallery (strangers accepted), an all-zero alignment template
    matched a stranger at 0.993, and {} as the output was a traceback."""
    for key, kind, what in (("preprocessing", dict, "an object"), ("extra", dict, "an object"),
                            ("calibration", dict, "an object"), ("fidelity", dict, "an object"),
                            ("architecture", str, "a string"), ("weights", str, "a string"), ("license", str, "a string")):
        if d.get(key) is not None and not isinstance(d[key], kind):
            raise _unusable(name, f"{key} is {_shown(d[key])}, not {what}")
    out = d.get("embedding_output")
    if out is not None and not (isinstance(out, str) or (isinstance(out, int) and not isinstance(out, bool))):
        raise _unusable(name, f"embedding_output is {_shown(out)}, not an output's index or name")
    dim = d.get("embedding_dim")
    if dim is not None and not (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0):
        raise _unusable(name, f"embedding_dim is {_shown(dim)}, not a positive whole number")
    if "task" in d and d["task"] not in TASKS:
        raise _unusable(name, f"task is {_shown(d['task'])}, not one of {', '.join(TASKS)}")
    try:
        spec = ModelSpec.from_dict(d)
    except (TypeError, ValueError, InputError) as exc:
        raise _unusable(name, " ".join(str(exc).split())[:200]) from None
    _check_extra(spec.extra, name)
    return spec


def _check_extra(extra: dict, name: str) -> None:
    rec = extra.get("recommended_threshold")
    if rec is not None:
        value = rec.get("value") if isinstance(rec, dict) else rec
        if not (_is_number(value) and -1.0 < value <= 1.0):
            raise _unusable(name, f"recommended_threshold is {_shown(value)}, not a similarity threshold (a number "
                                  "above -1 and at most 1)")
    unrelated = extra.get("unrelated_similarity")
    if unrelated is not None:
        p99 = unrelated.get("p99") if isinstance(unrelated, dict) else unrelated
        if not isinstance(unrelated, dict) or not (p99 is None or (_is_number(p99) and -1.0 <= p99 <= 1.0)):
            raise _unusable(name, f"unrelated_similarity is {_shown(unrelated)}, not an object whose p99 is a "
                                  "cosine (-1 to 1)")
    classifier = extra.get("classifier_output")
    if classifier is not None and not (isinstance(classifier, str) or (isinstance(classifier, int)
                                                                     and not isinstance(classifier, bool))):
        raise _unusable(name, f"classifier_output is {_shown(classifier)}, not an output's index or name")
    if extra.get("face_alignment") is not None:
        _check_alignment(extra["face_alignment"], name)


def _check_alignment(info: Any, name: str) -> None:
    """A face template: known, distinct keypoint names and as many finite [x, y] points (pixels of the model's input),
    no two of them closer than a pixel (an all-zero template aligned every face to one point)."""
    from .face.detector import KEYPOINT_NAMES  # noqa: PLC0415 - only for a face model's metadata

    want = "{'keypoints': [2 or more of " + ", ".join(KEYPOINT_NAMES) + "], 'template': [[x, y] for each]}"
    names, points = (info.get("keypoints"), info.get("template")) if isinstance(info, dict) else (None, None)
    if (not isinstance(names, list) or not 2 <= len(names) <= len(KEYPOINT_NAMES)
            or any(not isinstance(k, str) or k not in KEYPOINT_NAMES for k in names) or len(set(names)) != len(names)):
        raise _unusable(name, f"face_alignment is {_shown(info)}, expected {want}")
    if (not isinstance(points, list) or len(points) != len(names)
            or any(not isinstance(p, list) or len(p) != 2 or not all(_is_number(v) and abs(v) <= 1e4 for v in p)
                   for p in points)):
        raise _unusable(name, f"face_alignment's template is {_shown(points)}, expected {len(names)} [x, y] pairs of "
                              "pixel positions")
    close = min(math.dist(a, b) for i, a in enumerate(points) for b in points[i + 1 :])
    if close < 1.0:
        raise _unusable(name, f"face_alignment's template {_shown(points)} puts two keypoints on one spot (every face "
                              "would be squeezed to a point)")


def spec_from_metadata(metadata: dict[str, bytes], dtype_name: str, quantization: tuple[float, int],
                       name: str = "model") -> ModelSpec:
    """Build the spec from a model's metadata entries (see tflite_file.read_tflite)."""
    if METADATA_NAME in metadata:
        return checked_spec(metadata_json(metadata[METADATA_NAME], name), name)
    pre = default_preprocessing(dtype_name, quantization)
    std_meta = metadata.get("TFLITE_METADATA")
    if std_meta:
        norm = _tflite_metadata_normalization(std_meta)
        if norm is not None and norm[0] and norm[1]:
            mean, std = norm
            # Standard metadata normalises the 0..255 pixel as (p - mean) / std, as we do; for
            # integer inputs the input quantization is applied after it.
            pre = replace(pre, mean=_triple(mean, "mean"), std=_triple(std, "std"))
            return ModelSpec(preprocessing=pre, source="tflite-metadata")
    return ModelSpec(preprocessing=pre, source="defaults")


def _tflite_metadata_normalization(blob: bytes) -> tuple[list[float], list[float]] | None:
    """Read NormalizationOptions (mean, std) of the first input from a TFLITE_METADATA buffer."""
    from .tflite_file import _Reader

    try:
        r = _Reader(blob)
        root = r.deref(0)
        for sub in r.tables(root, 3):  # subgraph_metadata
            for tensor in r.tables(sub, 2)[:1]:  # input_tensor_metadata
                for unit in r.tables(tensor, 4):  # process_units
                    tpos = r.field_pos(unit, 0)
                    if tpos is None or r.u8(tpos) != 1:  # 1 = NormalizationOptions
                        continue
                    opts = r.deref(r.field_pos(unit, 1))
                    return _floats(r, opts, 0), _floats(r, opts, 1)
    except (struct.error, IndexError, TypeError):
        return None
    return None


def _floats(r, table: int, index: int) -> list[float]:
    vec = r.vector(table, index)
    if vec is None:
        return []
    start, n = vec
    return [struct.unpack_from("<f", r.data, start + 4 * i)[0] for i in range(n)]


def model_file_task(path: Any) -> str | None:
    """What a .tflite file's edgeembed metadata says it embeds ("image" or "face"), read without an interpreter;
    None when the file has no such metadata or cannot be read (opening it later says what is wrong). The command
    line uses it to enrol faces with a face model when no --mode is given."""
    from pathlib import Path

    from .tflite_file import read_tflite

    try:
        info = read_tflite(Path(path).read_bytes(), str(path))
        task = metadata_json(info.metadata[METADATA_NAME], str(path)).get("task")
    except (OSError, ModelError, KeyError):
        return None
    return task if task in ("image", "face") else None
