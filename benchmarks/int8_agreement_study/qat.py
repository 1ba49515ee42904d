"""Quantization-aware fine-tuning (converters/qat.py) on the shipped recipe: full-int8 top-1 agreement, held-aside pictures."""
import sys, time, numpy as np
from dataclasses import replace
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, convert as cv, qat
from converters.fidelity import compare
arch = sys.argv[1]; epochs = int(sys.argv[2]); lr = float(sys.argv[3])
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # the order of pictures and the random views
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
print("outputs", m.output_names)
crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), fm.built.input_size)
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
heldc = quantize.load_batch(held_files, crop, show_progress=False)
f = m.predict(held, batch_size=50, verbose=0); fc = m.predict(heldc, batch_size=50, verbose=0)
t = time.time()
s = qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs, lr=lr, augment=(len(sys.argv) < 5 or sys.argv[4] != 'noaug'), seed=seed), show_progress=False, log=print, held=held)
print(f"tuning {time.time() - t:.0f} s")
model = quantize.to_tflite(m, [calib], "int8", False, "mean")
open(f"/tmp/qat_{arch}_{epochs}_{lr}_{seed}.tflite", "wb").write(model)
run = quantize.TFLiteRunner(model)
for name, x, ref in (("stretch", held, f), ("crop", heldc, fc)):
    outs = run(x)
    rep = compare(ref["embedding"], outs[run.output_index(fm.built.embedding_dim)], ref["logits"], outs[run.output_index(1000)], labels)
    print(f"full int8 {name}: cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f} drop {rep['top1_drop_points']:+.1f}")
