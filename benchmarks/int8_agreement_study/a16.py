"""Reference point only: 16-bit activations / 8-bit weights (not Edge-TPU-mappable)."""
import sys, numpy as np, pickle
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1])); sys.path.insert(0, str(_here))
import common
from converters import quantize, convert as cv
import exp
arch = sys.argv[1]
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
b = fm.built
calib = quantize.load_batch(calib_files, prep, show_progress=False)
import tensorflow as tf
conv = tf.lite.TFLiteConverter.from_keras_model(b.model)
conv.optimizations = [tf.lite.Optimize.DEFAULT]
conv.representative_dataset = quantize._representative([calib], False)
conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
m = bytes(conv.convert())
open(f"/tmp/edgeembed_int8_study/{arch}_16x8.tflite", "wb").write(m)
exp.load(arch)
exp.evaluate(m, "16x8 (reference, minmax)")
