"""AdaRound (adaround_lib.py here) on the shipped recipe: weights-only and full-int8 top-1 agreement, held-aside pictures."""
import sys, time, numpy as np, pickle
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1])); sys.path.insert(0, str(_here))
import common
from converters import quantize, convert as cv
import adaround_lib as rounding
from converters.fidelity import compare
arch = sys.argv[1]; iters = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
f = m.predict(held, batch_size=50, verbose=0)
t = time.time()
summ = rounding.round_weights(m, calib, rounding.RoundingOptions(iters=iters), show_progress=False, log=print)
print(f"rounding {time.time() - t:.0f} s, flipped {summ['flipped']}/{summ['weights']}, median MSE ratio {summ['mse_ratio_median']:.3f}")
r = m.predict(held, batch_size=50, verbose=0)
rep = compare(f["embedding"], r["embedding"], f["logits"], r["logits"], labels)
print(f"weights-only (Keras, learned rounding): cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f}")
model = quantize.to_tflite(m, [calib], "int8", False, "mean")
open(f"/tmp/adaround_{arch}.tflite", "wb").write(model)
run = quantize.TFLiteRunner(model)
outs = run(held)
ie = run.output_index(fm.built.embedding_dim)
il = run.output_index(1000)
rep = compare(f["embedding"], outs[ie], f["logits"], outs[il], labels)
print(f"full int8 (TFLite, 'mean' ranges): cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f} drop {rep['top1_drop_points']:+.1f}")
