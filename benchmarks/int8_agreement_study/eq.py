"""ReLU6-bounded channel equalization before a depthwise convolution, then PTQ (and optionally int8-aware tuning).

Each channel c of a ReLU6 output that feeds a depthwise convolution is scaled up by s_c = 6 / (h * M_c), M_c its
largest value over the calibration pictures (channels that reach 6 keep s = 1), and the depthwise kernel's channel c is
divided by s_c. Both layers are quantized per channel, so their int8 weights do not change; only the per-tensor int8
activation between them gets every channel spread over the whole range. Float outputs are unchanged wherever the channel
stays below its calibration maximum times h.
usage: eq.py ARCH H [EPOCHS [SEED [fold [units]]]]   (fold: on the shipped recipe, input normalisation folded into the stem
first; units: the tuning trains the weights in their units before equalization, the scales kept as fixed factors)
`eq.py ARCH H EPOCHS SEED fold units conv` at commit fcd87d0 also equalized the ReLU6 outputs that feed a convolution
(depthwise -> projection); that option was removed after (worse: benchmarks/RESULTS.md).
Before commit 87b677a the tuning after equalize() simulated unfolded kernels (qat.weight_units lost the batch norms), so
the tuned results of that time are void.
"""
import sys, time, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, qat

arch = sys.argv[1]; h = float(sys.argv[2]); epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 0
seed = int(sys.argv[4]) if len(sys.argv) > 4 else 0
fold = len(sys.argv) > 5 and sys.argv[5] == "fold"
units = len(sys.argv) > 6 and sys.argv[6] == "units"
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
input_range = None
if fold:
    from converters import input_fold
    fo = input_fold.fold_input_normalisation(m, fm.pre)
    calib, held, heldc = common.refold(fm.pre, fo.pre, calib, held, heldc)
    m, input_range = fo.model, fo.input_range


def report(model_bytes, tag):
    common.report(model_bytes, fm, labels, held, heldc, f, fc, tag)


from converters import equalize
scales = equalize.equalize(m, calib, h)  # layer name -> factor: the unit before the ReLU6 s_c, the depthwise 1 / s_c
print(len(scales) // 2, "ReLU6 -> depthwise pairs; median scale per pair",
      np.round([np.median(s) for s in scales.values() if (s >= 1).all()], 1), flush=True)
channel_scale = scales if units else {}
g = m.predict(held, batch_size=50, verbose=0)
print("float logits max abs change (held-aside):", float(np.abs(g["logits"] - f["logits"]).max()),
      "top-1 same:", float((g["logits"].argmax(1) == f["logits"].argmax(1)).mean()), flush=True)
report(quantize.to_tflite(m, [calib], "int8", False, "mean", input_range), f"PTQ eq h={h}")
if epochs:
    t = time.time()
    qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs, seed=seed), show_progress=False, log=print, held=held,
                  input_range=input_range, channel_scale=channel_scale or None)
    print(f"tuning {time.time() - t:.0f} s", flush=True)
    b = quantize.to_tflite(m, [calib], "int8", False, "mean", input_range)
    open(f"/tmp/eq_{arch}_{h}_{epochs}_{seed}{'_fold' if fold else ''}{'_units' if units else ''}.tflite", "wb").write(b)
    report(b, f"tuned{epochs} eq h={h}")
