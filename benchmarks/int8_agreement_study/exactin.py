"""Lossless int8 input (converters/input_fold.py, shipped since 2026-11-26) with a chosen tuning seed.

    python benchmarks/int8_agreement_study/exactin.py ARCH [EPOCHS [SEED]]

The float model's normalisation is folded into its stem so the int8 input is exactly pixel - 128; the model is tuned
(EPOCHS, SEED) and converted as the converter does it, then measured against the original float model.
(Until commit e9ea4eb this script took C and K by hand: MobileNetV2 114 / 57.6, Lite0 128 / 127.5.)
"""
import sys, time
import numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1])); sys.path.insert(0, str(_here))
import common
from converters import input_fold, quantize, qat
from converters.fidelity import compare

arch = sys.argv[1]
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 0
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 0
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
fo = input_fold.fold_input_normalisation(fm.built.model, fm.pre)
C, K = fo.pre.mean[0], fo.pre.std[0]
cal2, held2, heldc2 = common.refold(fm.pre, fo.pre, calib, held, heldc)
print(f"C {C:g} K {K:g}; pixels recovered exactly: {np.abs((cal2 * K + C) - np.round(cal2 * K + C)).max():.2e}")
for name, x, ref in (("stretch", held2, f), ("crop", heldc2, fc)):
    r = fo.model.predict(x, batch_size=50, verbose=0)
    rep = compare(ref["embedding"], r["embedding"], ref["logits"], r["logits"], labels)
    print(f"folded float vs float {name}: cos {rep['mean_cosine']:.6f} min {rep['min_cosine']:.6f} agreement "
          f"{rep['top1_agreement']:.3f} max |logit diff| {np.abs(r['logits'] - ref['logits']).max():.4f}", flush=True)
if epochs:
    t = time.time()
    qat.fine_tune(fo.model, cal2, qat.QatOptions(epochs=epochs, seed=seed), show_progress=False, log=print, held=held2,
                  input_range=fo.input_range)
    print(f"tuning {time.time() - t:.0f} s")
model = quantize.to_tflite(fo.model, [cal2], "int8", False, "mean", fo.input_range)
open(f"/tmp/exactin_{arch}_{epochs}_{seed}.tflite", "wb").write(model)
print("input quantization (scale, zero point)", quantize.TFLiteRunner(model).inp["quantization"])
common.report(model, fm, labels, held2, heldc2, f, fc, f"exact-input int8 ({epochs} epochs, seed {seed})")
