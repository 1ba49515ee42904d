"""Does the tuning's int8 simulation (converters/qat.py) match TFLite's int8 model? Loss and agreement of both, held-aside.
usage: simcheck.py ARCH [H]   (H: also after eq.py's ReLU6 -> depthwise equalization with headroom H)
"""
import sys, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, qat
arch = sys.argv[1]
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
f = m.predict(held, batch_size=50, verbose=0)
ref = [f["embedding"], f["logits"]]
var = [float(np.var(t)) for t in qat._as_list(m.predict(calib, batch_size=50, verbose=0))]


def check(tag):
    qat.fine_tune(m, calib, qat.QatOptions(epochs=0), show_progress=False, log=lambda s: print(tag, "sim", s, flush=True), held=held)
    run = quantize.TFLiteRunner(quantize.to_tflite(m, [calib], "int8", False, "mean"))
    outs = run(held)
    e, l = outs[run.output_index(fm.built.embedding_dim)], outs[run.output_index(1000)]
    loss = float(np.mean((e - ref[0]) ** 2)) / var[0] + float(np.mean((l - ref[1]) ** 2)) / var[1]
    print(tag, f"TFLite loss {loss:.4f} (embedding {np.mean((e - ref[0]) ** 2) / var[0]:.4f}, logits {np.mean((l - ref[1]) ** 2) / var[1]:.4f})"
          f" agreement {(l.argmax(1) == ref[1].argmax(1)).mean():.3f}", flush=True)


check("default")
if len(sys.argv) > 2:
    h = float(sys.argv[2])
    from converters import equalize
    equalize.equalize(m, calib, h)  # on the weights the first check left on the int8 grid
    check(f"eq h={h}")
