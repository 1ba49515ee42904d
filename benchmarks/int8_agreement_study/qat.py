"""Quantization-aware fine-tuning (converters/qat.py) on the shipped recipe: full-int8 top-1 agreement, held-aside pictures."""
import sys, time
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, qat
arch = sys.argv[1]; epochs = int(sys.argv[2]); lr = float(sys.argv[3])
seed = int(sys.argv[5]) if len(sys.argv) > 5 else 0  # the order of pictures and the random views
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
print("outputs", m.output_names)
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
t = time.time()
s = qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs, lr=lr, augment=(len(sys.argv) < 5 or sys.argv[4] != 'noaug'), seed=seed), show_progress=False, log=print, held=held)
print(f"tuning {time.time() - t:.0f} s")
model = quantize.to_tflite(m, [calib], "int8", False, "mean")
open(f"/tmp/qat_{arch}_{epochs}_{lr}_{seed}.tflite", "wb").write(model)
common.report(model, fm, labels, held, heldc, f, fc, "full int8")
