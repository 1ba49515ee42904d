"""The ``edgeembed`` command. Thin: parse, call the Python API, print.

User mistakes end in one line on stderr (``edgeembed: error: ...``) and exit status 2; no
traceback unless EDGEEMBED_DEBUG=1.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from . import __version__
from .errors import EdgeEmbedError, GalleryError, InputError, debugging

DEFAULT_MODEL_NAME = "mobilenet_v2_1.0_224_int8.tflite"


# --------------------------------------------------------------------------- shared options
def _int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer from ``lo`` to ``hi``; the error says what came."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
            raise argparse.ArgumentTypeError(f"expected an integer {allowed}, got {value}")
        return value
    return parse


def _float_in(lo: float, hi: float) -> Callable[[str], float]:
    """An argparse type: a finite number from ``lo`` to ``hi``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not lo <= value <= hi:  # also refuses nan
            raise argparse.ArgumentTypeError(f"expected a number from {lo:g} to {hi:g}, got {text}")
        return value
    return parse


def _threshold_value(text: str) -> float | str:
    """An argparse type: ``auto``, or a cosine similarity from -1 to 1."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return _float_in(-1.0, 1.0)(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or auto)") from None


def _model_options(p: argparse.ArgumentParser, preprocessing: bool = True) -> None:
    g = p.add_argument_group("interpreter")
    g.add_argument("--backend", default="auto", choices=["auto", "ai_edge_litert", "tflite_runtime", "tensorflow"],
                   help="interpreter backend (default: the first installed of ai_edge_litert, tflite_runtime, tensorflow)")
    g.add_argument("--threads", type=_int_in(1, 256), default=None, help="CPU threads for the interpreter (default: all cores; live sources: all but one, which decodes)")
    g.add_argument("--delegate", default="cpu",
                   help="cpu, edgetpu[:usb|:pci], or the path of a delegate library (e.g. NNAPI or GPU delegate .so)")
    g.add_argument("--delegate-option", action="append", default=[], metavar="KEY=VALUE",
                   help="an option for the delegate library (repeatable)")
    if preprocessing:
        g = p.add_argument_group("preprocessing (overrides the model's metadata)")
        g.add_argument("--output", default=None, help="embedding output tensor: name or index (default: from metadata, else the first)")
        g.add_argument("--mean", type=_floats, default=None, help="pixel mean, 1 or 3 numbers: 127.5 or 123.7,116.3,103.5")
        g.add_argument("--std", type=_std_floats, default=None, help="pixel std, 1 or 3 numbers (0..255 units)")
        g.add_argument("--color-order", choices=["RGB", "BGR"], default=None, help="channel order the model expects")
        g.add_argument("--resize", choices=["center_crop", "letterbox", "stretch"], default=None)
        g.add_argument("--crop-fraction", type=float, default=None, help="centre crop keeps this fraction of the short side (0.875 = ImageNet eval; default: the model's)")


def _live_options(p: argparse.ArgumentParser, outputs: bool = True) -> None:
    """Options of continuous sources (video files, cameras, streams); used by recognize and (without the
    outputs, which it has none of) bench."""
    g = p.add_argument_group("live sources")
    g.add_argument("--fps", type=float, default=None, help="cap the frames processed per second")
    g.add_argument("--resolution", default=None, help="capture size WxH, e.g. 640x480")
    g.add_argument("--roi", default=None, help="region of interest x,y,w,h in frame pixels")
    g.add_argument("--stream", choices=["main", "lores"], default="main", help="picamera2 stream")
    g.add_argument("--smooth", type=int, default=5, help="frames of temporal smoothing (default 5)")
    g.add_argument("--max-frames", type=_int_in(1), default=None, help="stop after this many frames")
    if not outputs:
        return
    g = p.add_argument_group("outputs of live sources")
    g.add_argument("--mqtt", default=None, metavar="HOST[:PORT]",
                   help="publish events to this MQTT broker (mqtts://HOST[:PORT] for TLS, port 8883 by default)")
    g.add_argument("--mqtt-user", default=None, metavar="NAME",
                   help="log in to the broker as NAME; the password comes from $EDGEEMBED_MQTT_PASSWORD or "
                        "--mqtt-password-file, never the command line")
    g.add_argument("--mqtt-password-file", default=None, metavar="FILE", help="the broker password: FILE's first line")
    g.add_argument("--mqtt-tls", action="store_true", default=None,
                   help="MQTT over TLS, the broker's certificate checked against the system's CAs (as mqtts://)")
    g.add_argument("--mqtt-ca", default=None, metavar="FILE",
                   help="MQTT over TLS, the broker's certificate checked against this CA certificate (PEM)")
    g.add_argument("--mqtt-cert", default=None, metavar="FILE",
                   help="MQTT over TLS with this client certificate (PEM), for a broker that requires one")
    g.add_argument("--mqtt-key", default=None, metavar="FILE",
                   help="the unencrypted key of --mqtt-cert (PEM), when it is not in the certificate's file")
    g.add_argument("--mqtt-topic", default="edgeembed", help="MQTT topic prefix (default edgeembed)")
    g.add_argument("--camera-name", default="camera", help="name of this camera in events and MQTT topics")
    g.add_argument("--preview", type=_int_in(1, 65535), default=None, metavar="PORT", help="serve an MJPEG preview on this port")
    g.add_argument("--preview-host", default="127.0.0.1", help="preview bind address (default 127.0.0.1)")
    g.add_argument("--output", default=None, metavar="FILE", help="write an annotated video (.mkv survives a kill or power cut; .mp4 does not)")
    g.add_argument("--output-segment", type=_minutes, default=None, metavar="MINUTES",
                   help="write the annotated video in segments of this many minutes, FILE's name + -YYYYmmdd-HHMMSS; "
                        "when the disk fills, the oldest segments are removed and the run goes on")
    g.add_argument("--output-keep", type=_int_in(1), default=None, metavar="N",
                   help="with --output-segment: keep only the N newest segments (earlier runs' of FILE's name included)")


def _face_options(p: argparse.ArgumentParser) -> None:
    """Options of --mode face: detector, minimum face size, which face of a group photo to enrol."""
    g = p.add_argument_group("faces (--mode face)")
    g.add_argument("--detector", default=None, help="face detector: short, full (BlazeFace), or a .tflite path")
    g.add_argument("--min-face", type=_int_in(0, 100000), default=None, help="skip faces smaller than this many pixels")
    g.add_argument("--face-score", type=_float_in(0.0, 1.0), default=None, help="face detection score threshold (0..1)")
    g.add_argument("--pick-face", default=None, choices=["largest", "center"],
                   help="enrolment: in photos with several faces, use this one (without it such a photo stops the "
                        "enrolment, or is skipped with --skip-bad)")


def _minutes(text: str) -> float:
    """An argparse type: a finite number of minutes above 0 (refused before the camera opens)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of minutes above 0, got {text!r}") from None
    if not 0 < value < float("inf"):  # also refuses nan
        raise argparse.ArgumentTypeError(f"expected a number of minutes above 0, got {text}")
    return value


def _std_floats(text: str) -> list[float]:
    from .spec import check_std_units

    vals = _floats(text)
    try:
        check_std_units(vals, "")
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip()) from None
    return vals


def _size_text(size_bytes: int) -> str:
    """'3.6 MB', or '36 KB' for a small model (it read '0.0 MB')."""
    return f"{size_bytes / 1e6:.1f} MB" if size_bytes >= 100_000 else f"{max(1, round(size_bytes / 1e3))} KB"


def _floats(text: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 comma-separated numbers, got {text!r}") from None
    if not all(v == v and abs(v) != float("inf") for v in vals):
        raise argparse.ArgumentTypeError(f"expected finite numbers, got {text!r}")
    return vals


def _delegate_options(args: argparse.Namespace) -> dict[str, str]:
    out = {}
    for item in args.delegate_option:
        if "=" not in item:
            raise InputError(f"--delegate-option must be KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        if not k.strip():
            raise InputError(f"--delegate-option needs a KEY before '=', got {item!r}")
        out[k.strip()] = v
    if out and (args.delegate or "cpu").strip().lower() in ("cpu", "none", ""):
        raise InputError("--delegate-option is passed to a delegate library: give --delegate edgetpu or "
                         "--delegate /path/to/libdelegate.so with it")
    return out


def _runtime_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"backend": args.backend, "num_threads": args.threads, "delegate": args.delegate,
            "delegate_options": _delegate_options(args)}


def _embedder_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The model options typed on the command line, as EmbedderOptions fields (model_path aside)."""
    return dict(output=args.output, mean=args.mean, std=args.std, color_order=args.color_order, resize=args.resize,
                crop_fraction=args.crop_fraction, **_runtime_kwargs(args))


def _embedder_options(args: argparse.Namespace, model: str | os.PathLike):
    from .embedder import EmbedderOptions

    return EmbedderOptions(model_path=model, **_embedder_kwargs(args))


def _open_embedder(args: argparse.Namespace, model: str | os.PathLike):
    from .embedder import Embedder

    emb = Embedder.create_from_options(_embedder_options(args, model))
    try:
        if emb.spec.source != "edgeembed-metadata" and emb.looks_like_class_probabilities():
            print(f"note: {model}'s output {emb.describe()['embedding']['output']!r} looks like a classifier's class "
                  "probabilities (it sums to 1), which recognize poorly; use the model cut before its classifier "
                  "(an embedding-extractor export, or 'edgeembed convert')", file=sys.stderr)
    except BaseException:
        emb.close()
        raise
    return emb


def _print(obj: Any) -> None:
    sys.stdout.write(json.dumps(_no_nan(obj)) + "\n")
    sys.stdout.flush()


def _no_nan(obj: Any) -> Any:
    """NaN and infinities as null: strict JSON parsers reject them."""
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def default_model() -> Path:
    """The shipped default model: $EDGEEMBED_MODEL, else models/ beside the package (repo or install)."""
    from .shipped import shipped_model

    return shipped_model(DEFAULT_MODEL_NAME, "EDGEEMBED_MODEL")


# --------------------------------------------------------------------------- commands
def cmd_inspect(args: argparse.Namespace) -> int:
    from .spec import model_file_task

    face = args.mode == "face" or (args.mode is None and model_file_task(args.model) == "face")
    if face:
        from .face.recognizer import open_face_model
        from .recognizer import face_alignment_of

        with open_face_model(args.model, **_embedder_kwargs(args)) as emb:
            info = emb.describe()
            info["face_alignment"] = face_alignment_of(emb) | {
                "from": "metadata" if (info.get("extra") or {}).get("face_alignment") else "default"}
        info["mode"] = "face"
    else:
        with _open_embedder(args, args.model) as emb:
            info = emb.describe()
        info["mode"] = "image"
    if args.json:
        _print(info)
        return 0
    f = info["input"]
    print(f"model        {info['model']}  ({_size_text(info['size_bytes'])}, fingerprint {info['fingerprint']})")
    print(f"input        {f['height']}x{f['width']}x3 {f['dtype']} (scale {f['quantization']['scale']:.6g}, "
          f"zero point {f['quantization']['zero_point']})")
    for o in info["outputs"]:
        print(f"output {o['index']}     {o['name']} {o['shape']} {o['dtype']}")
    e = info["embedding"]
    print(f"embedding    {e['dim']}-d from {e['output']}")
    pre = info["preprocessing"]
    print(f"preprocess   {pre['color_order']}, {pre['resize']} (crop {pre['crop_fraction']}), mean {pre['mean']}, "
          f"std {pre['std']}  [from {info['spec_source']}]")
    folded = (info.get("extra") or {}).get("float_model_normalisation")
    if folded:
        print(f"             the float model's mean {tuple(folded['mean'])}, std {tuple(folded['std'])} is folded into "
              "the first convolution")
    for key in ("task", "architecture", "weights", "license"):
        if info.get(key):
            said = (" (the file does not say; --mode face)" if key == "task" and info["mode"] != info[key]
                    and info.get("spec_source") != "edgeembed-metadata" else "")
            print(f"{key:<12} {info['mode'] if said else info[key]}{said}")
    align = info.get("face_alignment")
    if align:
        print(f"face mode    faces aligned so that {', '.join(align['keypoints'])} land on "
              f"{' '.join(f'({x:g}, {y:g})' for x, y in align['template'])} [{'from the metadata' if align['from'] == 'metadata' else 'the default ArcFace template'}]")
    elif info.get("spec_source") == "defaults" and f["dtype"] == "float32" and args.mode is None:
        print("             in face mode this model gets raw 0..255 pixels: edgeembed inspect MODEL --mode face")
    from .recognizer import unrelated_p99  # noqa: PLC0415

    p99 = unrelated_p99(info.get("extra"))
    if p99 is not None:
        pictures = info["extra"]["unrelated_similarity"].get("pictures")
        print(f"unrelated    pictures of different things: cosine 99th percentile {p99:.4f}"
              + (f" over {pictures} pictures" if type(pictures) is int else "")
              + ": the threshold of a gallery of one label, the floor of one with few pictures per label")
    from .recognizer import recommended_threshold  # noqa: PLC0415

    rec_value = recommended_threshold(info.get("extra"))
    if rec_value is not None:
        rec = info["extra"]["recommended_threshold"]
        far = rec.get("far") if isinstance(rec, dict) else None
        print(f"threshold    {rec_value:.4f}: the floor of a gallery's automatic threshold"
              + (f" ({far:.1%} of pairs of different people score above it)" if isinstance(far, float) and 0 < far < 1 else ""))
    for line in _fidelity_lines(info.get("fidelity")):
        print(line)
    return 0


def _fidelity_lines(fid: Any) -> list[str]:
    """The converter's fidelity report as a few lines (it was one raw JSON line of ~1000 characters, its verdict
    buried inside); --json keeps all of it."""
    if not isinstance(fid, dict) or not fid:
        return []
    if isinstance(fid.get("int8_vs_dlib"), dict):
        return _dlib_fidelity_lines(fid)
    if not isinstance(fid.get("mean_cosine"), (int, float)) or "images" not in fid:  # another report's layout
        return [f"fidelity     {json.dumps(fid)}"]

    def figures(r: dict) -> str:
        out = f"mean cosine {r['mean_cosine']:.4f}"
        out += f", min {r['min_cosine']:.4f}" if isinstance(r.get("min_cosine"), (int, float)) else ""
        out += f", 1-NN agreement {r['nn1_agreement']:.3f}" if isinstance(r.get("nn1_agreement"), (int, float)) else ""
        if isinstance(r.get("top1_agreement"), (int, float)):
            out += f", top-1 agreement {r['top1_agreement']:.3f}"
            if isinstance(r.get("top1_float"), (int, float)) and isinstance(r.get("top1_quant"), (int, float)):
                out += f" (top-1 float {r['top1_float']:.3f} -> quantized {r['top1_quant']:.3f})"
        return out

    held = f"{fid['faces']} held-aside faces" if "faces" in fid else f"{fid.get('images', '?')} held-aside pictures"
    lines = [f"fidelity     converted against the float model, {held}: {figures(fid)}"]
    alt = fid.get("imagenet_center_crop_0.875")
    if isinstance(alt, dict) and "mean_cosine" in alt:
        lines.append(f"             with ImageNet's centre crop 0.875: {figures(alt)}")
    if fid.get("passed") is False:
        lines.append(f"             BELOW the converter's gate: {'; '.join(map(str, fid.get('failures') or []))}")
    elif fid.get("passed") is None and fid.get("note"):
        lines.append(f"             not judged: {fid['note']}")
    return lines


def _dlib_fidelity_lines(fid: dict) -> list[str]:
    """The face model's report (int8 against dlib's own descriptors) as a few lines; it too was one raw JSON line
    of ~2000 characters."""
    def num(r: dict, key: str, fmt: str = ".3f") -> str:
        return format(r[key], fmt) if isinstance(r.get(key), (int, float)) else "?"

    def figures(r: dict) -> str:
        out = f"mean cosine {num(r, 'mean_cosine', '.4f')}, min {num(r, 'min_cosine', '.4f')}"
        if "nn1_label_agreement" in r:
            out += f"; nearest other face the same person as with dlib {num(r, 'nn1_label_agreement')}"
        if "gallery1_label_agreement" in r:
            out += (f"; one picture per person enrolled, the same answer as dlib {num(r, 'gallery1_label_agreement')}"
                    f" (recall@1 {num(r, 'gallery1_recall_model')}, dlib {num(r, 'gallery1_recall_dlib')})")
        return out

    r = fid["int8_vs_dlib"]
    lines = [f"fidelity     int8 against dlib's own descriptors, {r.get('chips', '?')} face chips: {figures(r)}"]
    unseen = r.get("unseen_people")
    if isinstance(unseen, dict):
        lines.append(f"             people not used for calibration, {unseen.get('chips', '?')} chips: {figures(unseen)}")
    flt = fid.get("float_keras_vs_dlib")
    if isinstance(flt, dict):
        lines.append(f"             the float model before quantization against dlib: mean cosine "
                     f"{num(flt, 'mean_cosine', '.4f')}, min {num(flt, 'min_cosine', '.4f')}")
    below = fid.get("below_bars")
    bars = fid.get("bars") if isinstance(fid.get("bars"), dict) else {}
    if below:
        lines.append(f"             BELOW the converter's bars: {'; '.join(map(str, below))}")
    elif bars:
        lines.append("             passed the converter's bars: " + ", ".join(f"{k} >= {v}" for k, v in bars.items()))
    return lines


def cmd_embed(args: argparse.Namespace) -> int:
    opts = _embedder_options(args, args.model)
    opts.quantize = args.int8
    from .embedder import Embedder

    with Embedder.create_from_options(opts) as emb:
        for image in args.images:
            t0 = time.perf_counter()
            e = emb.embed(image)
            ms = (time.perf_counter() - t0) * 1000
            if args.json:
                out = {"image": image, "dim": len(e), "time_ms": round(ms, 3), "embedding": [round(v, 7) for v in e.tolist()]}
                if e.quantized is not None:
                    out["embedding_int8"] = e.quantized.tolist()
                _print(out)
            else:
                head = ", ".join(f"{v:.4f}" for v in e.vector[:6])
                print(f"{image}: {len(e)}-d [{head}, ...] {ms:.1f} ms")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from .gallery import DB_NAME, Gallery, check_label
    from .recognizer import collect_labelled, create_gallery, enroll, model_values, open_gallery_embedder

    if args.label is not None:
        if not args.label.strip():
            raise InputError(f"--label is empty ({args.label!r}); give the name to enrol the pictures under")
        items = []
        for p in args.inputs:
            path = Path(p)
            if path.is_dir():
                from .preprocess import list_images

                items += [(args.label, f) for f in list_images(path, recursive=True)]
            else:
                items.append((args.label, path))
    else:
        if len(args.inputs) != 1:
            raise InputError("give one folder whose sub-folders are labels, or --label NAME with image files")
        items = collect_labelled(args.inputs[0])
    if not items:  # said before any model or gallery is opened, in both modes
        given = ", ".join(args.inputs)
        raise InputError(f"no pictures to enrol in {given} (the folder or list given holds none); nothing was enrolled")
    for label in dict.fromkeys(label for label, _ in items):  # before any model is loaded or gallery created
        check_label(label)
    exists = (Path(args.gallery) / DB_NAME).exists()
    gallery = Gallery.open(args.gallery) if exists else None
    if gallery is not None and args.mode is None:
        args.mode = gallery.binding.mode  # enrolling more into a face gallery needs no --mode face
    if gallery is None and args.mode is None:
        chosen = args.model or os.environ.get("EDGEEMBED_MODEL")
        args.mode = _mode_of_model(chosen, args.quiet, "enrolling")
        if args.mode == "face":
            args.model = chosen  # face mode's own default is the shipped face model, not the one named here
    if args.mode == "face":
        from .face.cli import enroll_faces  # noqa: PLC0415 - optional feature, imported where used

        if gallery is not None:
            gallery.close()
        return enroll_faces(args, items, exists)
    if gallery is not None:
        if gallery.binding.mode != "image":
            gallery.close()
            raise GalleryError(f"gallery {args.gallery} holds {gallery.binding.mode} embeddings; drop --mode image "
                               "(or use --mode face) to enrol into it, or give another gallery")
        emb = open_gallery_embedder(gallery, args.model, **_runtime_kwargs(args))  # checks the binding
        if _has_pre_overrides(args):
            try:
                _same_settings_as_gallery(args, emb, gallery)
            except BaseException:
                emb.close()
                gallery.close()
                raise
        target: Gallery | Callable[[], Gallery] = gallery
    else:
        default = not args.model
        if default:
            args.model = str(default_model())
        emb = _open_embedder(args, args.model)

        def target() -> Gallery:  # created only once there is something to add
            nonlocal gallery
            gallery = create_gallery(args.gallery, emb, "image")
            if gallery.created:  # said even with --quiet: a mistyped or unmounted --gallery starts a new gallery
                if default:
                    how = "the model EDGEEMBED_MODEL names" if os.environ.get("EDGEEMBED_MODEL") else "the default model"
                    print(f"created {args.gallery} with {how}, {args.model} (--model chooses another)", file=sys.stderr)
                else:
                    print(f"created {args.gallery} (a new gallery) with {args.model}", file=sys.stderr)
            return gallery
    try:
        with emb:
            report = enroll(target, lambda p: emb.embed(p).vector, items, skip_bad=args.skip_bad,
                            show_progress=not args.quiet, model=model_values(emb))
            report["gallery"] = str(args.gallery)
    finally:
        if gallery is not None:
            gallery.close()
    if args.json:
        _print(report)
    else:
        print(f"enrolled {count_of(report['enrolled'], 'image')} under {count_of(len(report['labels']), 'label')} "
              f"into {args.gallery} ({count_of(report['entries'], 'entry', 'entries')}, threshold {report['threshold']:.3f})")
        print_skipped(report["skipped"])
    print_look_alikes(report["look_alikes"])
    return 0


def _threshold_change(before: float, after: float) -> str:
    return f"; threshold {before:.3f} -> {after:.3f} (re-derived)" if round(before, 3) != round(after, 3) else ""


def print_look_alikes(alikes: list[dict], shown: int = 5) -> None:
    """A note per new entry the gallery would recognize as another label (recognizer.look_alikes), on stderr."""
    for a in alikes[:shown]:
        where = f"entry #{a['entry']}" if "entry" in a else a["source_of_other"]
        new = f" (entry #{a['new_entry']})" if a.get("new_entry") is not None else ""
        undo = f"'gallery remove --entry {a['new_entry']}'" if a.get("new_entry") is not None else "'gallery remove --entry ID'"
        print(f"note: {a['source']}{new}, enrolled as {a['label']!r}, is recognized as {a['recognized_as']!r} ({where}, "
              f"similarity {a['similarity']:.3f}): the same person or object under two labels, or a picture under "
              f"the wrong one? {undo} takes the new entry back", file=sys.stderr)
    if len(alikes) > shown:
        print(f"note: {len(alikes) - shown} more new entries are recognized as another label (--json lists them all)",
              file=sys.stderr)


def count_of(n: int, noun: str, plural: str | None = None) -> str:
    """'1 image', '3 images'; '1 entry', '3 entries' with the plural given."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def print_skipped(skipped: list[dict]) -> None:
    """Each picture skipped as unusable on its own line; pictures already enrolled (a folder enrolled again after
    a few were added) in one line."""
    again = [s for s in skipped if s["reason"].startswith("already enrolled")]
    for s in skipped:
        if s not in again:
            print(f"skipped {s['source']}: {s['reason']}", file=sys.stderr)
    if again:
        print(f"skipped {len(again)} picture(s) already enrolled under the same label (e.g. {again[0]['source']})",
              file=sys.stderr)


def _same_settings_as_gallery(args: argparse.Namespace, emb: Any, gallery: Any) -> None:
    """Preprocessing options given to an existing gallery must be the ones it was enrolled with (the gallery
    keeps its own, so they are redundant): different ones would add vectors that do not compare."""
    from dataclasses import replace

    import numpy as np

    pre = emb.spec.preprocessing
    now = replace(pre, **{k: getattr(args, k) for k in ("mean", "std", "color_order", "resize", "crop_fraction")
                          if getattr(args, k) is not None})  # checked and made triples as the embedder does
    out = emb._output["name"]
    out_now = emb._select_output(args.output)["name"] if args.output is not None else out
    differ = []
    for k in ("mean", "std", "color_order", "resize", "crop_fraction"):
        a, b = getattr(now, k), getattr(pre, k)
        same = a == b if isinstance(b, str) else np.allclose(np.atleast_1d(a), np.atleast_1d(b))
        if not same:
            differ.append(f"--{k.replace('_', '-')} {_setting(a)} (the gallery's: {_setting(b)})")
    if out_now != out:
        differ.append(f"--output {out_now} (the gallery's: {out})")
    if differ:
        raise GalleryError(f"gallery {gallery.path} was enrolled with other settings: {'; '.join(differ)}; its "
                           "vectors would not compare with these: drop the options (the gallery keeps its own) or "
                           "enroll into a new gallery")


def _setting(v: Any) -> str:
    if isinstance(v, str):
        return v
    vals = [float(x) for x in (v if isinstance(v, (list, tuple)) else [v])]
    return ",".join(f"{x:g}" for x in (vals[:1] if len(set(vals)) == 1 else vals))


def _has_pre_overrides(args: argparse.Namespace) -> bool:
    return any(getattr(args, k, None) is not None for k in ("output", "mean", "std", "color_order", "resize", "crop_fraction"))


def cmd_gallery(args: argparse.Namespace) -> int:
    from .gallery import Gallery, normal_label, shown_label
    from .recognizer import threshold_values

    with Gallery.open(args.gallery) as g:
        if args.action == "list":
            info = g.summary()
            if args.entries:
                info["items"] = g.entries()
            if args.json:
                _print(info)
            else:
                print(f"{info['gallery']}: {count_of(info['entries'], 'entry', 'entries')}, {count_of(info['label_count'], 'label')}, "
                      f"model {info['model']} ({info['dim']}-d, {info['mode']}), threshold {info['threshold']:.3f}")
                for label, n in info["labels"].items():
                    print(f"  {shown_label(label)}: {n}")
                for item in info.get("items", []):
                    print(f"  #{item['id']} {shown_label(item['label'])} {item['source']}")
            if info["model_file"] != "same":  # the commands that embed check the model; say it before they are run
                print(f"note: the model file this gallery was enrolled with ({info['model']}) "
                      + {"missing": "is no longer there", "unreadable": "cannot be read"}.get(info["model_file"],
                                                                                                 "has changed since")
                      + "; recognize and enroll check whether the model they are given embeds as it did, and say "
                        "what to do if not", file=sys.stderr)
            g.check()  # listed first (what to enrol again from), then a damaged vector file is one error line
        elif args.action == "remove":
            before = g.threshold
            if args.entry is not None:
                g.remove_entry(args.entry, meta=threshold_values)  # the automatic threshold follows
                result = {"removed_entries": 1, "entry": args.entry}
            elif args.label:
                result = {"removed_entries": g.remove_label(args.label, meta=threshold_values), "label": args.label}
            else:
                raise InputError("gallery remove needs a LABEL or --entry ID")
            result.update(entries=len(g), threshold=g.threshold, threshold_source=g.meta.get("threshold_source", "default"))
            # removing someone is forgetting them: their vectors go from the vector file too, not at some later compact
            try:
                result["erased_rows"] = g.compact()
            except (OSError, sqlite3.Error, GalleryError) as exc:  # the removal is committed: say it, and what is left
                result.update(erased_rows=0, erase_error=str(exc))
                print(f"edgeembed: warning: removed, but their vectors are still in {g.path}'s vector file (rewriting "
                      f"it failed: {exc}); run 'edgeembed gallery compact --gallery {g.path}' when that is fixed",
                      file=sys.stderr)
            _print(result) if args.json else print(f"removed {count_of(result['removed_entries'], 'entry', 'entries')}; {result['entries']} left"
                                                   + _threshold_change(before, g.threshold))
        elif args.action == "rename":
            before = g.threshold
            done = g.rename(args.old, args.new, meta=threshold_values)
            new = normal_label(args.new)
            if args.json:
                _print({"renamed": args.old, "to": new, "result": done, "entries": len(g), "threshold": g.threshold,
                        "threshold_source": g.meta.get("threshold_source", "default")})
            else:
                print({"renamed": f"renamed {args.old} -> {new}", "merged": f"merged {args.old} into {new}",
                       "unchanged": f"{args.old} is already called {new}: nothing changed"}[done]
                      + _threshold_change(before, g.threshold))
        elif args.action == "threshold":
            if args.value == "auto":
                g.reset_threshold(meta=threshold_values)
            elif args.value is not None:
                g.set_threshold(args.value)
            source = g.meta.get("threshold_source", "default")
            _print({"threshold": g.threshold, "threshold_source": source, "source": source}) if args.json \
                else print(f"threshold {g.threshold:.4f} ({g.meta.get('threshold_source', 'default')})")
        elif args.action == "compact":
            n = g.compact()
            _print({"dropped_rows": n}) if args.json else print(f"dropped {n} unused rows")
    return 0


_STREAM_ONLY = (("output", "--output"), ("output_segment", "--output-segment"), ("output_keep", "--output-keep"),
                ("preview", "--preview"), ("mqtt", "--mqtt"), ("mqtt_user", "--mqtt-user"),
                ("mqtt_password_file", "--mqtt-password-file"), ("mqtt_tls", "--mqtt-tls"), ("mqtt_ca", "--mqtt-ca"),
                ("mqtt_cert", "--mqtt-cert"), ("mqtt_key", "--mqtt-key"),
                ("fps", "--fps"), ("resolution", "--resolution"))


def still_pictures(args: argparse.Namespace, files: list[Path]) -> tuple[list[Path], Callable[[Path], Any]]:
    """The pictures ``recognize`` answers one by one (a picture, a folder, a glob), and how to read each: the first
    ``--max-frames`` of them, each cut to ``--roi``. Options only a stream has are refused, not silently ignored."""
    from .sources import check_stream, crop_roi, parse_roi  # noqa: PLC0415

    given = [flag for attr, flag in _STREAM_ONLY if getattr(args, attr, None) is not None]
    check_stream(getattr(args, "stream", "main"), args.source)
    if given:
        what = "a picture" if len(files) == 1 else f"{len(files)} pictures"
        raise InputError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} for video files, cameras and streams; "
                         f"{args.source} is {what}, answered one by one: drop {'it' if len(given) == 1 else 'them'}")
    from .preprocess import read_image  # noqa: PLC0415

    roi = parse_roi(getattr(args, "roi", None))
    limit = getattr(args, "max_frames", None)
    return files[:limit] if limit else files, (lambda f: crop_roi(read_image(f), roi)) if roi else (lambda f: f)


def cmd_recognize(args: argparse.Namespace) -> int:
    from .gallery import Gallery, shown_label
    from .preprocess import still_images
    from .recognizer import open_gallery_embedder

    gallery = Gallery.open(args.gallery)
    if gallery.binding.mode == "face" and args.mode == "image":
        gallery.close()
        raise GalleryError(f"gallery {args.gallery} holds faces; recognize faces in it (drop --mode image), or use a "
                           "gallery enrolled from whole images")
    if gallery.binding.mode == "face" or args.mode == "face":
        from .face.cli import recognize_faces  # noqa: PLC0415

        return recognize_faces(args, gallery)
    files = still_images(args.source)
    if files is None:
        from .live import recognize_live  # noqa: PLC0415 - video, cameras and streams

        return recognize_live(args, gallery)
    try:
        files, picture = still_pictures(args, files)
    except EdgeEmbedError:
        gallery.close()
        raise
    failed = 0
    with open_gallery_embedder(gallery, args.model, **_runtime_kwargs(args)) as emb, gallery:
        for i, f in enumerate(files):
            t0 = time.perf_counter()
            try:
                v = emb.embed(picture(f)).vector
            except EdgeEmbedError as exc:
                if len(files) == 1:
                    raise
                failed += 1
                _print({"frame": i, "source": str(f), "error": str(exc)}) if args.json else \
                    print(f"{f}: error: {exc}", file=sys.stderr)
                continue
            t1 = time.perf_counter()
            r = gallery.recognize(v, threshold=args.threshold, k=args.top_k)
            t2 = time.perf_counter()
            if args.json:
                out = {"frame": i, "source": str(f), **r.to_dict(),
                       "time_ms": {"embed": round((t1 - t0) * 1000, 3), "search": round((t2 - t1) * 1000, 3)}}
                _print(out)
            else:
                label = shown_label(r.label) if r.label is not None else "unknown"
                # how far off an unknown was: the nearest label and the threshold it missed (for --threshold)
                near = f" (nearest {shown_label(r.matches[0].label)}, threshold {r.threshold:.3f})" if r.label is None and r.matches else ""
                print(f"{f}: {label} {r.score:.3f}{near} ({(t2 - t0) * 1000:.1f} ms)")
    if failed == len(files):
        raise InputError(f"none of the {len(files)} images in {args.source} could be recognized (each is named above, "
                         "with why)")
    return 0


def _mode_of_model(model: str | None, quiet: bool, doing: str) -> str:
    """--mode when none is given: face for a model whose metadata says it embeds faces, else image. Whole pictures
    through a face model make a poor gallery without a word (ORL recall@1 0.82 against 0.99 in face mode; an
    enrolled person's new photo came back 'unknown')."""
    from .spec import model_file_task

    if model and model_file_task(model) == "face":
        if not quiet:
            print(f"{model} is a face embedding model: {doing} the faces found in the pictures (--mode face; "
                  "--mode image embeds whole pictures)", file=sys.stderr)
        return "face"
    return "image"


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate
    from .recognizer import model_values

    from .errors import ImageError

    if args.mode is None:
        args.mode = _mode_of_model(args.model, args.quiet or args.json, "evaluating")
    try:
        if args.mode == "face":
            from .face.cli import eval_faces  # noqa: PLC0415

            result = eval_faces(args)
        else:
            with _open_embedder(args, args.model) as emb:
                result = evaluate(args.dataset, args.gallery_per_class, lambda p: emb.embed(p).vector,
                                  show_progress=not args.quiet, far_target=args.far, model=model_values(emb),
                                  skip_bad=args.skip_bad)
                result["model"] = str(args.model)
                result["fingerprint"] = emb.fingerprint
    except ImageError as exc:  # one picture of many: the run can go on without it
        raise ImageError(f"{exc} (or --skip-bad leaves such pictures out)") from None
    if args.json:
        _print(result)
    else:
        o = result["open_set"]
        print(f"{result['dataset']}: {result['classes']} classes, {result['queries']} queries, K={args.gallery_per_class} "
              f"({Path(str(result.get('model', args.model))).name}, {args.mode} mode, "
              f"{result['per_image_ms']:.1f} ms per picture)")
        skipped = result.get("skipped") or []
        if skipped:
            print(f"note: {count_of(len(skipped), 'unreadable picture')} left out (--skip-bad): "
                  + "; ".join(s["reason"] for s in skipped[:3]) + ("; ..." if len(skipped) > 3 else ""))
        only = result.get("gallery_only_classes") or []
        if only:
            print(f"note: {count_of(len(only), 'class', 'classes')} with {args.gallery_per_class} picture(s) or fewer "
                  f"went wholly into the gallery, with no query of their own: {', '.join(only[:5])}"
                  + (", ..." if len(only) > 5 else ""))
        if args.mode == "face" and result.get("no_face"):
            print(f"note: no face found in {result['no_face']} of {result['images']} pictures (a query without one is a "
                  "miss, and a rejection in the open set; a gallery picture without one enrols nothing, as enroll "
                  "refuses it)")
        if args.mode == "face" and result.get("multi_face"):
            print(f"note: {result['multi_face']} of {result['images']} pictures had several faces: the "
                  f"{args.pick_face or 'largest'} was used (--pick-face)")
        five = "" if result["classes"] > 5 else " (of 5 classes or fewer: it counts every query its class was found for)"
        print(f"recall@1 {result['recall@1']:.4f}  recall@5 {result['recall@5']:.4f}{five}")
        if o.get("best_threshold") is not None:
            print(f"open set ({o['known_classes']} known, {count_of(o['stranger_classes'], 'stranger')}; {o['genuine_queries']} "
                  f"genuine and {o['impostor_queries']} stranger attempts): best threshold {o['best_threshold']:.4f} "
                  f"(accuracy {o['best_accuracy']:.4f}); TAR {o['tar_at_far']:.4f} at FAR {o['far_at_threshold']:.4f} "
                  f"(threshold {o['threshold_at_far']:.4f})")
            if 0 < o["far_target"] * o["impostor_queries"] < 1:
                print(f"note: FAR {o['far_target']:g} is below what {o['impostor_queries']} stranger attempts can "
                      f"measure (one false accept is {1 / o['impostor_queries']:.4f}): the figure is that of FAR 0")
        else:
            print(f"open set: not measured ({o.get('note') or 'no genuine or no stranger attempt'})")
        a = o.get("automatic_threshold")
        if a:
            print(f"the automatic threshold a gallery of these known classes derives ({a['threshold']:.4f}): TAR "
                  f"{a['tar']:.4f} at FAR {a['far']:.4f}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .live import bench_source  # noqa: PLC0415 - cameras and streams

    return bench_source(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo  # noqa: PLC0415

    return run_demo(args)


# --------------------------------------------------------------------------- parser
class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error (what was wrong, where the help is) instead of the usage block."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgeembed", description="Offline image and face recognition on LiteRT.")
    parser.add_argument("--version", action="version", version=f"edgeembed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("inspect", help="show a model's input, outputs, preprocessing and metadata")
    p.add_argument("model", help="a .tflite model")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--mode", choices=["image", "face"], default=None,
                   help="show what this mode uses: face mode gives a float model without metadata raw 0..255 pixels "
                        "and aligns faces to a template (default: face for a model whose metadata says so)")
    _model_options(p)
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("embed", help="print the embedding of each image")
    p.add_argument("model", help="a .tflite embedding model")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--json", action="store_true", help="one JSON object per image, with the `embedding` list")
    p.add_argument("--int8", action="store_true", help="also print the int8-quantized embedding")
    _model_options(p)
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("enroll", help="add labelled images to a gallery (created on first use)")
    p.add_argument("inputs", nargs="+", help="a folder whose sub-folders are labels, or images/folders with --label")
    p.add_argument("--gallery", required=True, help="gallery folder")
    p.add_argument("--model", default=None, help="the model of a new gallery (default: the shipped default model); an existing one knows its model")
    p.add_argument("--label", default=None, help="enrol all given images under this label")
    p.add_argument("--mode", choices=["image", "face"], default=None,
                   help="whole images, or faces found in them (default: the gallery's mode; for a new gallery, face with a "
                        "face model, else image)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (and photos without exactly one face) instead of enrolling nothing")
    _face_options(p)
    p.add_argument("--json", action="store_true", help="print JSON (one object per result) instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _model_options(p)
    p.set_defaults(func=cmd_enroll)

    p = sub.add_parser("gallery", help="list, remove, rename, threshold, compact")
    gsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    g = gsub.add_parser("list", help="labels and entry counts")
    g.add_argument("--entries", action="store_true", help="also list every entry")
    g = gsub.add_parser("remove", help="remove a label, or one entry with --entry")
    g.add_argument("label", nargs="?", help="the label to remove with all its entries")
    g.add_argument("--entry", type=int, default=None, help="remove only this entry (ids: 'gallery list --entries')")
    g = gsub.add_parser("rename", help="rename a label (onto an existing label: merge)")
    g.add_argument("old")
    g.add_argument("new")
    g = gsub.add_parser("threshold", help="show or set the similarity threshold below which the answer is unknown")
    g.add_argument("value", nargs="?", type=_threshold_value, default=None,
                   help="new threshold, a cosine similarity in [-1, 1], or auto: derived from the gallery again, as "
                        "before one was set (without it: show the current one)")
    g = gsub.add_parser("compact", help="rewrite the vector file without removed entries")
    for g in gsub.choices.values():
        g.add_argument("--gallery", required=True, help="gallery folder")
        g.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("recognize", help="recognize an image, a folder, a video, a camera or a stream")
    p.add_argument("--gallery", required=True, help="gallery folder (it knows its model)")
    p.add_argument("--source", required=True, help="image, folder, video file, camera index, URL, or picamera2")
    p.add_argument("--model", default=None, help="the gallery's model, if it has moved")
    p.add_argument("--mode", choices=["image", "face"], default=None, help="default: the gallery's mode")
    p.add_argument("--threshold", type=_float_in(-1.0, 1.0), default=None,
                   help="override the gallery's threshold (a cosine similarity, -1 to 1)")
    p.add_argument("--top-k", type=_int_in(1), default=3, help="matches to report per item")
    p.add_argument("--json", action="store_true", help="one JSON object per image or frame")
    _live_options(p)
    _face_options(p)
    _model_options(p, preprocessing=False)
    p.set_defaults(func=cmd_recognize)

    p = sub.add_parser("bench", help="per-stage latency (capture, preprocess, invoke, search) and frames per second")
    p.add_argument("--source", required=True, help="video file, camera index, URL, folder, or picamera2")
    p.add_argument("--gallery", default=None, help="gallery to search (default: none, search is skipped)")
    p.add_argument("--model", default=None, help="model (default: the gallery's, else the shipped default)")
    p.add_argument("--frames", type=int, default=300, help="frames to process (default 300)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per result) instead of text")
    _live_options(p, outputs=False)
    _model_options(p, preprocessing=False)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("eval", help="recall@k and open-set figures on a folder of class sub-folders")
    p.add_argument("model")
    p.add_argument("dataset", help="folder whose sub-folders are classes")
    p.add_argument("--gallery-per-class", type=_int_in(1), default=1, help="K evenly spaced gallery images per class, the rest are queries (default 1)")
    p.add_argument("--mode", choices=["image", "face"], default=None,
                   help="whole images, or faces found in them (default: face for a face model, else image)")
    p.add_argument("--far", type=_float_in(0.0, 1.0), default=0.01, help="target false-accept rate for the open-set threshold (default 0.01)")
    p.add_argument("--skip-bad", action="store_true", help="leave out pictures that cannot be read (listed) instead of stopping")
    p.add_argument("--json", action="store_true", help="print JSON (one object per result) instead of text")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _face_options(p)
    _model_options(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="enrol and recognize the bundled sample pictures with the default model")
    p.add_argument("--model", default=None, help="default: the shipped default model")
    p.add_argument("--workdir", default=None, help="where to write the sample pictures and gallery, kept afterwards (default: a temp folder, removed at the end)")
    p.add_argument("--json", action="store_true", help="print JSON (one object per result) instead of text")
    _model_options(p, preprocessing=False)
    p.set_defaults(func=cmd_demo)

    try:  # the converters need TensorFlow: registered only when they are importable
        from converters.cli import add_parser as add_convert_parser  # noqa: PLC0415
    except ModuleNotFoundError as exc:  # only a missing package falls back; a broken one shows itself
        if exc.name not in ("converters", "converters.cli"):
            raise
        p = sub.add_parser("convert", help="convert a model to int8 TFLite (needs the convert extra: pip install -e '.[convert]' in the clone)")
        p.set_defaults(func=_convert_missing)
    else:
        add_convert_parser(sub)
    return parser


def _convert_missing(args: argparse.Namespace) -> int:
    raise EdgeEmbedError("the converters are not installed; install them with: pip install -e '.[convert]' "
                         "in your edgeembed clone")


def _system_error(exc: BaseException) -> str:
    """One line for a failure of the disk or of the gallery database, with what to do about it."""
    from .gallery import DB_NAME  # noqa: PLC0415 - an error path: the gallery module is not loaded for every command

    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
        return (f"the gallery cannot be written ({exc}); make its folder and its {DB_NAME} writable, or "
                "copy it somewhere writable (nothing was changed)")
    if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
        return (f"the gallery is busy ({exc}): another process has held its write lock for 30 s; run again once "
                "it has finished (nothing was changed)")
    if isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc):  # SQLITE_FULL
        return (f"no space left on the device for the gallery ({exc}); free some space and run again (nothing of "
                "this run was kept)")
    if isinstance(exc, sqlite3.OperationalError) and "disk I/O error" in str(exc):  # SQLITE_IOERR: not corruption
        return (f"the disk failed during a gallery write ({exc}); {_gallery_write_state()}; check the SD card or "
                "drive (dmesg) and run again")
    if isinstance(exc, sqlite3.Error):
        return (f"the gallery database is damaged ({exc}); restore the gallery folder from a backup (keep a "
                f"{DB_NAME}-journal beside it: it undoes a write that was cut off)")
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    if getattr(exc, "errno", None) == errno.EIO:
        return (f"the disk failed to read or write{where}: {exc.strerror}; {_gallery_write_state()}; check the SD "
                "card or drive (dmesg) and run again")
    if getattr(exc, "errno", None) == errno.ENOSPC:
        if "annotated video" in str(getattr(exc, "strerror", "")):  # the video sink's own account, with what it kept
            return f"no space left on the device: {exc.strerror}"
        return f"no space left on the device{where}; free some space and run again (nothing half-written was kept)"
    if getattr(exc, "errno", None) == errno.EROFS:
        return (f"cannot write{where}: {exc.strerror}; mount it read-write (or use a writable place) and run again "
                "(nothing half-written was kept)")
    if getattr(exc, "errno", None) in (errno.EACCES, errno.EPERM):
        closed = _closed_folder(exc.filename) if getattr(exc, "filename", None) else None
        if closed:
            return closed
        return (f"cannot write{where}: {exc.strerror}; run as the user who owns it, or choose a writable place "
                "(nothing half-written was kept)")
    return f"{exc.strerror or exc}{where}; check that path"


def _closed_folder(filename: str) -> str | None:
    """The line for a file in a folder this user may not enter (a gallery made by another user, e.g. with sudo: a new
    gallery's folder is its owner's alone), or None when the folder is open to this user."""
    import pwd  # noqa: PLC0415 - an error path

    folder = Path(filename) if os.path.isdir(filename) else Path(filename).parent
    try:
        st = folder.stat()
    except OSError:
        return None
    if os.access(folder, os.R_OK | os.X_OK):
        return None
    try:
        owner, me = pwd.getpwuid(st.st_uid).pw_name, pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        owner, me = str(st.st_uid), str(os.getuid())
    return (f"cannot read {folder}: it belongs to {owner} and is open to its owner only (mode {st.st_mode & 0o777:o}; a "
            f"new gallery is its owner's alone); run as {owner}, or give it to {me} (sudo chown -R {me} {folder}), or "
            f"share it: chmod 750 {folder} and a group both are in (nothing was changed)")


def main(argv: Sequence[str] | None = None) -> int:
    if "cv2" not in sys.modules:  # our one-line errors without OpenCV's own lines beside them (any OpenCV version);
        # its ERROR lines too ("TIFF_Error TIFFReadDirectory: ..." above "cut.tif is a damaged TIFF file")
        os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR" if debugging() else "SILENT")
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own lines ("[mjpeg @ 0x..] overread 8") too
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeEmbedError as exc:
        _traceback_if_debugging()
        print(f"edgeembed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"edgeembed: {_interrupted_line()}", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (sqlite3.Error, OSError) as exc:  # the disk or the gallery database, not the input
        _traceback_if_debugging()
        print(f"edgeembed: error: {_system_error(exc)}", file=sys.stderr)
        return 2


def _last_gallery_write() -> str:
    """What this process's last gallery write came to, read from the gallery itself (its token committed or not),
    since an interrupt or a disk error can land after a commit as well as before it: 'no gallery' (none involved),
    'not begun', 'committed', 'not committed' or 'unknown' (the database cannot be read now)."""
    gallery = sys.modules.get("edgeembed.gallery")
    if gallery is None or not gallery.GALLERY_OPENED:
        return "no gallery"
    if gallery.PENDING_WRITE is None:
        return "not begun"
    committed = gallery.last_write_committed()
    return "committed" if committed else "not committed" if committed is False else "unknown"


def _interrupted_line() -> str:
    """What an interrupted command left."""
    return {
        # no gallery involved (convert, embed, eval): outputs are written atomically
        "no gallery": "interrupted; nothing half-written was kept",
        # e.g. an enrolment still embedding: say the gallery was not touched
        "not begun": "interrupted before any gallery change: the gallery is as it was; nothing half-written was kept",
        "committed": ("interrupted after the gallery change was committed: it is in the gallery ('edgeembed gallery "
                      "list' shows it)"),
        "not committed": "interrupted; the gallery change in progress was not committed: the gallery is as it was",
        "unknown": ("interrupted during a gallery change; the gallery holds all of it or none of it ('edgeembed "
                    "gallery list')"),
    }[_last_gallery_write()]


def _gallery_write_state() -> str:
    """Whether this run's gallery write went in, for a disk error's line."""
    return {
        "no gallery": "no gallery was changed",
        "not begun": "no gallery was changed",
        "committed": "the gallery change was committed before it",
        "not committed": "the gallery change was not committed: the gallery is as it was",
        "unknown": "the gallery holds all of this run's change or none of it ('edgeembed gallery list' shows which)",
    }[_last_gallery_write()]


def _traceback_if_debugging() -> None:
    """With EDGEEMBED_DEBUG, the traceback above the one-line error (the exit status stays the same)."""
    if debugging():
        import traceback  # noqa: PLC0415

        traceback.print_exc()


if __name__ == "__main__":
    sys.exit(main())
