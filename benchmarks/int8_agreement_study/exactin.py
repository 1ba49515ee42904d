"""Lossless int8 input: the per-channel normalisation folded into the stem convolution, so the int8 input holds each
pixel exactly (q = pixel - 128) instead of rounding (pixel - mean_c) / std_c to one per-tensor grid.

    python benchmarks/int8_agreement_study/exactin.py ARCH C K [EPOCHS [SEED]]

The folded model takes x' = (pixel - C) / K (C an integer: the input's zero is then a pixel value) and gives the float
model's outputs exactly, except where the stem's zero padding now stands for pixel C instead of the channel's mean.
"""
import sys, time
import numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1])); sys.path.insert(0, str(_here))
import common
from converters import quantize, qat
from converters.fidelity import compare

arch, C, K = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
epochs = int(sys.argv[4]) if len(sys.argv) > 4 else 0
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
mean = np.broadcast_to(np.asarray(fm.pre.mean, np.float32), (3,))
std = np.broadcast_to(np.asarray(fm.pre.std, np.float32), (3,))


def to_exact(x):
    """float input of the original model -> x' = (pixel - C) / K"""
    return ((x * std + mean - C) / K).astype(np.float32)


import keras
folded = keras.models.clone_model(m); folded.set_weights(m.get_weights())
conv = next(l for l in folded.layers if isinstance(l, keras.layers.Conv2D))
bn = qat.weight_units(folded)[0].bn
w = conv.get_weights(); k = w[0]
a, b = K / std, (C - mean) / std  # x_c = a_c x'_c + b_c
extra = np.einsum("hwio,i->o", k, b)
w[0] = k * a[None, None, :, None]
conv.set_weights(w)
g = bn.get_weights()  # gamma, beta, moving_mean, moving_variance
g[2] = g[2] - extra
bn.set_weights(g)
cal2, held2, heldc2 = to_exact(calib), to_exact(held), to_exact(heldc)
print(f"x' range {cal2.min():.4f} .. {cal2.max():.4f}; pixels recovered exactly: "
      f"{np.abs((cal2 * K + C) - np.round(cal2 * K + C)).max():.2e}")
for name, x, ref in (("stretch", held2, f), ("crop", heldc2, fc)):
    r = folded.predict(x, batch_size=50, verbose=0)
    rep = compare(ref["embedding"], r["embedding"], ref["logits"], r["logits"], labels)
    print(f"folded float vs float {name}: cos {rep['mean_cosine']:.6f} min {rep['min_cosine']:.6f} agreement "
          f"{rep['top1_agreement']:.3f} max |logit diff| {np.abs(r['logits'] - ref['logits']).max():.4f}", flush=True)
if epochs:
    t = time.time()
    qat.fine_tune(folded, cal2, qat.QatOptions(epochs=epochs, seed=seed), show_progress=False, log=print, held=held2)
    print(f"tuning {time.time() - t:.0f} s")
model = quantize.to_tflite(folded, [cal2], "int8", False, "mean")
open(f"/tmp/exactin_{arch}_{C:g}_{K:g}_{epochs}_{seed}.tflite", "wb").write(model)
print("input quantization (scale, zero point)", quantize.TFLiteRunner(model).inp["quantization"])
common.report(model, fm, labels, held2, heldc2, f, fc, f"exact-input int8 ({epochs} epochs, seed {seed})")
