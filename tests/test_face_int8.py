"""int8 face embedder made by edgeembed from the float MobileFaceNet, calibrated on aligned face crops.

The quantized file is written to a temp dir only (MobileFaceNet's licence: research use,
never shipped). Conversion needs TensorFlow (the convert extra).
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, MODELS, REPO, run_cli

FLOAT = MODELS / "mobilefacenet.tflite"
UINT8 = MODELS / "mobilefacenet_uint8.tflite"
ORL = DATA / "orl-faces"

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def int8_model(tmp_path_factory):
    from converters.tflite_quant import quantize_face_model

    out = tmp_path_factory.mktemp("int8") / "mobilefacenet_int8.tflite"
    report = quantize_face_model(FLOAT, out, [ORL / f"s{i}" for i in range(1, 21)], show_progress=False)
    return out, report


def test_aligned_crops_come_from_the_runtime_detector_and_template():
    from converters.faces import aligned_face_crops
    from edgeembed.face import default_template

    crops = aligned_face_crops([ORL / "s1", DATA / "coral-images" / "hot_dog.jpg"], 112, default_template(112),
                               show_progress=False)
    assert crops.shape == (10, 112, 112, 3) and crops.dtype == np.uint8  # the hot dog has no face: skipped
    # aligned: the eyes sit where the template puts them, so the mean crop is darker at the eye rows
    mean = crops.mean(axis=(0, 3))
    assert mean[48:56, 30:46].mean() < mean[20:28, 30:46].mean()


def test_int8_metadata_and_fidelity(int8_model):
    from edgeembed import Embedder

    path, report = int8_model
    assert report["calibration_crops"] == 100 and report["bytes_int8"] < report["bytes_float"] / 2
    assert report["fidelity"]["rebuild_max_abs_error"] < 1e-3
    with Embedder.create_from_model_path(path) as emb:
        info = emb.describe()
    assert info["input"]["dtype"] == "int8" and info["spec_source"] == "edgeembed-metadata" and info["task"] == "face"
    assert tuple(info["preprocessing"]["mean"]) == (0.0, 0.0, 0.0) and tuple(info["preprocessing"]["std"]) == (1.0, 1.0, 1.0)
    fa = info["extra"]["face_alignment"]
    assert fa["keypoints"] == ["right_eye", "left_eye", "nose_tip", "mouth_center"] and len(fa["template"]) == 4
    assert info["calibration"]["kind"] == "aligned face crops" and info["calibration"]["activation_ranges"] == "mean"
    assert not any(p.name.startswith("mobilefacenet") for p in REPO.rglob("*.tflite"))  # never in the repository


def test_int8_keeps_recall_within_one_point_of_float_on_orl(int8_model):
    path, _ = int8_model
    res = {}
    for name, model in (("float", FLOAT), ("int8", path), ("uint8", UINT8)):
        p = run_cli("eval", model, ORL, "--gallery-per-class", "1", "--mode", "face", "--json", "--quiet", "--threads", "2",
                    check=True)
        res[name] = json.loads(p.stdout)
    assert res["int8"]["no_face"] == res["float"]["no_face"] == 0
    assert res["int8"]["recall@1"] >= res["float"]["recall@1"] - 0.01
    assert res["int8"]["tar@far1%"] >= res["float"]["tar@far1%"] - 0.05


def test_int8_is_closer_to_float_than_the_shared_uint8_file(int8_model):
    """On people the calibration never saw (s21..s40), embeddings compared with the float model's."""
    from converters.faces import aligned_face_crops
    from edgeembed.face import FaceEmbedder

    crops = aligned_face_crops([ORL / f"s{i}" for i in range(21, 41)], 112, show_progress=False)
    ref = FaceEmbedder.from_model_path(FLOAT, num_threads=2).embed_crops(crops)
    cos = {}
    for name, m in (("int8", int8_model[0]), ("uint8", UINT8)):
        cos[name] = float((FaceEmbedder.from_model_path(m, num_threads=2).embed_crops(crops) * ref).sum(1).mean())
    assert cos["int8"] > cos["uint8"] + 0.02, cos


def test_quantizer_errors_and_the_former_command_line(tmp_path):
    """`python -m converters.tflite_quant` quantized without the fidelity gate: it now names the command that
    replaces it; `edgeembed convert --tflite` gives the quantizer's errors in one line each, writing nothing."""
    p = subprocess.run([sys.executable, "-m", "converters.tflite_quant", str(FLOAT), str(tmp_path / "o.tflite"),
                        "--calibration-faces", str(ORL)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 2 and "edgeembed convert --tflite" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    p = run_cli("convert", "--tflite", tmp_path / "missing.tflite", "--out", tmp_path / "o.tflite",
                "--calibration-faces", ORL, "--quiet")
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("edgeembed: error: model not found")
    p = run_cli("convert", "--tflite", UINT8, "--out", tmp_path / "o.tflite", "--calibration-faces", ORL / "s1", "--quiet")
    assert p.returncode == 2 and "already quantized" in p.stderr.strip().splitlines()[-1]
    assert not list(tmp_path.iterdir())


def test_edgeembed_convert_tflite_with_calibration_faces_passes_the_fidelity_gate(tmp_path):
    """`edgeembed convert --tflite F --calibration-faces DIR`: calibrated on the faces of the even photos and judged on
    the odd ones (or --fidelity-dir), as face mode embeds them. MobileFaceNet int8 is below the 0.98 cosine gate:
    the model goes beside --out with exit status 3, as a conversion's does; accepted, it goes to --out."""
    out = tmp_path / "face_int8.tflite"
    p = run_cli("convert", "--tflite", FLOAT, "--calibration-faces", ORL / "s3", "--out", out, "--json", "--quiet")
    assert p.returncode == 3, p.stderr[-1500:]
    assert "LOW FIDELITY" in p.stderr and "calibration face crops" in p.stderr and not out.exists()
    report = json.loads(p.stdout.strip().splitlines()[-1])
    low = tmp_path / "face_int8.low-fidelity.tflite"
    assert report["model"] == str(low) and report["calibration_images"] == 5  # even photos of s3; the odd 5 judge
    assert report["calibration_faces"] == 5  # what they count ("calibration_images" kept for older readers)
    fid = report["fidelity"]
    assert fid["images"] == fid["faces"] == 5 and fid["passed"] is False and fid["mean_cosine"] < 0.98 and "probe" in fid
    # the printed report counts faces, not images
    assert "fidelity on 5 held-aside faces: " in p.stderr and "only 5 held-aside faces;" in p.stderr
    assert "held-aside images" not in p.stderr and "held-aside pictures" not in p.stderr

    p = run_cli("convert", "--tflite", FLOAT, "--calibration-faces", ORL / "s3", "--fidelity-dir", ORL / "s4",
                "--activation-ranges", "minmax", "--accept-low-fidelity", "--out", out, "--json", "--quiet")
    assert p.returncode == 0, p.stderr[-1500:]
    info = json.loads(run_cli("inspect", out, "--json", check=True).stdout)
    assert info["task"] == "face" and info["input"]["dtype"] == "int8"
    assert info["calibration"]["images"] == 10 and info["calibration"]["activation_ranges"] == "minmax"
    assert info["calibration"]["requantized_from"] == str(FLOAT) and info["calibration"]["held_aside_photos"] == 10
    assert info["fidelity"]["images"] == 10 and info["fidelity"]["passed"] is False  # accepted, not hidden
    assert info["calibration"]["faces"] == info["fidelity"]["faces"] == 10
    text = run_cli("inspect", out, check=True).stdout
    assert "converted against the float model, 10 held-aside faces: " in text and "pictures" not in text
    side = json.loads((tmp_path / "face_int8.fidelity.json").read_text())
    assert side["fidelity"]["mean_cosine"] == info["fidelity"]["mean_cosine"]


def test_requantize_held_aside_photos_without_faces_are_named_in_one_line(tmp_path):
    """Held-aside photos without a face: one line naming the flag and folder (it printed the whole file list)."""
    noface = tmp_path / "noface"
    noface.mkdir()
    for name in ("cat.bmp", "owl.jpg"):
        (noface / name).write_bytes((DATA / "coral-images" / name).read_bytes())
    for view in ("000", "018", "036"):  # 5 in all: the fewest the fidelity check takes
        (noface / f"obj01_{view}.png").write_bytes((DATA / "coil20" / "obj01" / f"{view}.png").read_bytes())
    p = run_cli("convert", "--tflite", FLOAT, "--calibration-faces", ORL / "s1", "--fidelity-dir", noface,
                "--out", tmp_path / "f.tflite", "--quiet")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr[-1500:]
    assert f"no face found in the 5 image(s) of --fidelity-dir {noface}" in p.stderr and "PosixPath" not in p.stderr
    assert not list(tmp_path.glob("f*"))
