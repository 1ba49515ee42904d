"""Write what the runtime needs into the .tflite: the ``edgeembed`` ModelSpec entry and, for other
tools (MediaPipe ImageEmbedder, the TFLite Task Library), the standard ``TFLITE_METADATA``.

The standard metadata is the ``metadata_schema.fbs`` flatbuffer (file identifier ``M001``), built
here with the plain ``flatbuffers`` builder because ``tflite-support`` does not install beside
TensorFlow 2.21. It carries the input's ImageProperties (RGB, size) and NormalizationOptions
(mean/std on 0..255 pixels, the same convention as edgeembed.spec) and marks the outputs as features.
"""
from __future__ import annotations

from pathlib import Path

from edgeembed.spec import METADATA_NAME, ModelSpec
from edgeembed.tflite_file import write_metadata

STANDARD_NAME = "TFLITE_METADATA"
_IMAGE_PROPERTIES, _FEATURE_PROPERTIES = 2, 1  # ContentProperties union
_NORMALIZATION_OPTIONS = 1  # ProcessUnitOptions union
_RGB = 1  # ColorSpaceType


def standard_metadata(spec: ModelSpec, height: int, width: int, n_outputs: int = 1, name: str = "edgeembed model",
                      description: str = "", license_text: str = "") -> bytes:
    """A TFLITE_METADATA flatbuffer for an image model with ``n_outputs`` feature outputs."""
    import flatbuffers

    b = flatbuffers.Builder(1024)

    def floats(vals):
        b.StartVector(4, len(vals), 4)
        for v in reversed(vals):
            b.PrependFloat32(float(v))
        return b.EndVector()

    def offsets(offs):
        b.StartVector(4, len(offs), 4)
        for o in reversed(offs):
            b.PrependUOffsetTRelative(o)
        return b.EndVector()

    pre = spec.preprocessing
    order = (2, 1, 0) if pre.color_order == "BGR" else (0, 1, 2)  # metadata is in the model's channel order
    mean, std = floats([pre.mean[i] for i in order]), floats([pre.std[i] for i in order])
    b.StartObject(2)  # NormalizationOptions
    b.PrependUOffsetTRelativeSlot(0, mean, 0)
    b.PrependUOffsetTRelativeSlot(1, std, 0)
    norm = b.EndObject()
    b.StartObject(2)  # ProcessUnit
    b.PrependUint8Slot(0, _NORMALIZATION_OPTIONS, 0)
    b.PrependUOffsetTRelativeSlot(1, norm, 0)
    unit = b.EndObject()
    b.StartObject(2)  # ImageSize
    b.PrependUint32Slot(0, width, 0)
    b.PrependUint32Slot(1, height, 0)
    size = b.EndObject()
    b.StartObject(2)  # ImageProperties
    b.PrependInt8Slot(0, _RGB, 0)
    b.PrependUOffsetTRelativeSlot(1, size, 0)
    props = b.EndObject()
    b.StartObject(3)  # Content
    b.PrependUint8Slot(0, _IMAGE_PROPERTIES, 0)
    b.PrependUOffsetTRelativeSlot(1, props, 0)
    content = b.EndObject()
    in_name = b.CreateString("image")
    in_desc = b.CreateString(f"{width}x{height} {pre.color_order} picture, "
                             f"{pre.resize} resize (crop fraction {pre.crop_fraction}), (pixel - mean) / std")
    units = offsets([unit])
    b.StartObject(7)  # TensorMetadata
    b.PrependUOffsetTRelativeSlot(0, in_name, 0)
    b.PrependUOffsetTRelativeSlot(1, in_desc, 0)
    b.PrependUOffsetTRelativeSlot(3, content, 0)
    b.PrependUOffsetTRelativeSlot(4, units, 0)
    in_tensor = b.EndObject()
    outs = []
    for i in range(n_outputs):
        b.StartObject(0)  # FeatureProperties
        feat = b.EndObject()
        b.StartObject(3)
        b.PrependUint8Slot(0, _FEATURE_PROPERTIES, 0)
        b.PrependUOffsetTRelativeSlot(1, feat, 0)
        oc = b.EndObject()
        is_emb = spec.embedding_output in (None, i, str(i)) if spec.embedding_output is not None else i == 0
        on = b.CreateString("embedding" if is_emb else ("logits" if n_outputs == 2 else f"output_{i}"))
        od = b.CreateString(f"{spec.embedding_dim}-d embedding; compare with cosine similarity" if is_emb
                            else "classifier logits")
        b.StartObject(7)
        b.PrependUOffsetTRelativeSlot(0, on, 0)
        b.PrependUOffsetTRelativeSlot(1, od, 0)
        b.PrependUOffsetTRelativeSlot(3, oc, 0)
        outs.append(b.EndObject())
    inputs_vec, outputs_vec = offsets([in_tensor]), offsets(outs)
    sg_name = b.CreateString(name)
    b.StartObject(4)  # SubGraphMetadata
    b.PrependUOffsetTRelativeSlot(0, sg_name, 0)
    b.PrependUOffsetTRelativeSlot(2, inputs_vec, 0)
    b.PrependUOffsetTRelativeSlot(3, outputs_vec, 0)
    subgraph = b.EndObject()
    sgs = offsets([subgraph])
    m_name = b.CreateString(name)
    m_desc = b.CreateString(description or name)
    m_ver = b.CreateString("1")
    m_author = b.CreateString("edgeembed converter")
    m_lic = b.CreateString(license_text or (spec.license or "see models/README.md"))
    m_min = b.CreateString("1.0.0")
    b.StartObject(8)  # ModelMetadata
    b.PrependUOffsetTRelativeSlot(0, m_name, 0)
    b.PrependUOffsetTRelativeSlot(1, m_desc, 0)
    b.PrependUOffsetTRelativeSlot(2, m_ver, 0)
    b.PrependUOffsetTRelativeSlot(3, sgs, 0)
    b.PrependUOffsetTRelativeSlot(4, m_author, 0)
    b.PrependUOffsetTRelativeSlot(5, m_lic, 0)
    b.PrependUOffsetTRelativeSlot(7, m_min, 0)
    root = b.EndObject()
    b.Finish(root, file_identifier=b"M001")
    return bytes(b.Output())


def write_spec(model: bytes, spec: ModelSpec, height: int, width: int, n_outputs: int = 1,
               standard: bool = True, name: str = "model") -> bytes:
    """Return ``model`` with the ``edgeembed`` ModelSpec entry (and the standard metadata) inside."""
    entries = {METADATA_NAME: spec.to_json().encode("utf-8")}
    if standard:
        entries[STANDARD_NAME] = standard_metadata(spec, height, width, n_outputs, name=spec.architecture or name)
    return write_metadata(model, entries, name)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one step: a reader sees the old file or the new one, never half.

    On failure the temporary file is removed and ``path`` is as it was."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def save_model(path: str | Path, model: bytes, spec: ModelSpec, height: int, width: int, n_outputs: int = 1,
               fidelity_json: bool = True) -> Path:
    """Write the .tflite with metadata and the fidelity JSON beside it (or remove a stale one), as one change
    (:func:`write_model_and_json`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = write_spec(model, spec, height, width, n_outputs, name=path.name)
    side = fidelity_json_text(path, spec.architecture, spec.weights, spec.calibration, spec.fidelity) if fidelity_json else False
    write_model_and_json(path, data, side)
    return path


def write_model_and_json(path: str | Path, data: bytes, side: bytes | None | bool) -> Path | None:
    """Replace the model at ``path`` with ``data`` and its .fidelity.json with ``side`` (None: remove the JSON an
    earlier model left; False: leave the JSON alone) as one change: both are written to temporary files in the
    model's folder first and renamed into place only when both are complete. A full disk or any other failure while
    writing removes the temporary files and leaves both paths as they were, so "nothing half-written was kept" stays
    true. The two renames are two steps: only a crash or Ctrl-C between them (microseconds; a rename needs no free
    space) can leave the new model beside the old JSON. -> the JSON's path, or None."""
    import os

    path = Path(path)
    json_path = fidelity_path(path)
    writes = [(path, data)] + ([(json_path, side)] if isinstance(side, bytes) else [])
    temps: list[tuple[Path, Path]] = []
    try:
        for dest, content in writes:
            tmp = dest.with_name(f"{dest.name}.{os.getpid()}.tmp")  # open(), not mkstemp: the umask's permissions
            temps.append((tmp, dest))
            tmp.write_bytes(content)
        for tmp, dest in temps:
            os.replace(tmp, dest)
    except BaseException:
        for tmp, _ in temps:
            try:
                tmp.unlink()
            except OSError:
                pass
        raise
    if side is None:
        json_path.unlink(missing_ok=True)
    return json_path if isinstance(side, bytes) else None


def fidelity_json_text(model_path: str | Path, architecture, weights, calibration, fidelity) -> bytes | None:
    """The ``.fidelity.json`` of a model about to be written at ``model_path``; None without a fidelity report."""
    import json

    if fidelity is None:
        return None
    return (json.dumps({"model": Path(model_path).name, "architecture": architecture, "weights": weights,
                        "calibration": calibration, "fidelity": fidelity}, indent=2) + "\n").encode("utf-8")


def write_fidelity_json(model_path: str | Path, architecture, weights, calibration, fidelity) -> Path | None:
    """The ``.fidelity.json`` beside a model just written: it always describes that model. Without a fidelity
    report the JSON an earlier model left there is removed (None is returned)."""
    side = fidelity_path(model_path)
    text = fidelity_json_text(model_path, architecture, weights, calibration, fidelity)
    if text is None:
        side.unlink(missing_ok=True)
        return None
    write_atomically(side, text)
    return side


def fidelity_path(model_path: str | Path) -> Path:
    p = Path(model_path)
    return p.with_name(p.stem + ".fidelity.json")


def low_fidelity_path(model_path: str | Path) -> Path:
    """Where a model that failed the fidelity gate is written instead of ``model_path`` (NAME.low-fidelity.tflite),
    so that a good model already at ``model_path`` is kept."""
    p = Path(model_path)
    return p.with_name(p.stem + ".low-fidelity" + p.suffix)


def remove_low_fidelity(model_path: str | Path) -> None:
    """A model written to its own path supersedes one an earlier run left beside it below the gate (and that one's
    .fidelity.json and Edge TPU compilation): two models side by side would leave the user to guess which is current."""
    low = low_fidelity_path(model_path)
    low.unlink(missing_ok=True)
    fidelity_path(low).unlink(missing_ok=True)
    from .edgetpu import compiled_paths  # noqa: PLC0415 - no TensorFlow there either

    for compiled in compiled_paths(low):
        compiled.unlink(missing_ok=True)  # its Edge TPU compilation (--edgetpu) went below the gate with it
