"""The shipped recipe tuned with different weights on its outputs' losses; each real TFLite model's top-1 / top-2 margin
error (int8 minus float, rms over the 500 held-aside pictures), cosine and top-1 agreement, stretch.
usage: margin.py ARCH EPOCHS SEED W_EMBEDDING,W_LOGITS [W_EMBEDDING,W_LOGITS ...]   (at commit 5e0f611: it needs
QatOptions.output_weights, removed after)
"""
import sys, time, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, qat, input_fold, equalize
from converters.convert import _copy

arch, epochs, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
fo = input_fold.fold_input_normalisation(fm.built.model, fm.pre)
calib, held = common.refold(fm.pre, fo.pre, calib, held)
base = fo.model
scales = equalize.equalize(base, calib, 2.0)
lf = f["logits"]; top = lf.argmax(1); second = np.argsort(lf, 1)[:, -2]; r = np.arange(len(top))
for spec in sys.argv[4:]:
    w = tuple(float(x) for x in spec.split(","))
    m = _copy(base)
    t = time.time()
    qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs, seed=seed, output_weights=w), show_progress=False,
                  input_range=fo.input_range, channel_scale=scales)
    run = quantize.TFLiteRunner(quantize.to_tflite(m, [calib], "int8", False, "mean", fo.input_range))
    outs = run(held)
    e, l = outs[run.output_index(fm.built.embedding_dim)], outs[run.output_index(1000)]
    d = l - lf
    cos = np.sum(e * f["embedding"], 1) / np.linalg.norm(e, axis=1) / np.linalg.norm(f["embedding"], axis=1)
    print(f"weights {w}: margin error rms {np.sqrt(np.mean((d[r, top] - d[r, second]) ** 2)):.3f}, logit error rms "
          f"{np.sqrt(np.mean(d ** 2)):.3f}, cosine {cos.mean():.4f}, top-1 agreement {(l.argmax(1) == top).mean():.3f} "
          f"({time.time() - t:.0f} s)", flush=True)
