"""The float model with only its input rounded to the int8 model's input grid: what the input quantization alone costs."""
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
import common
from converters.fidelity import compare
arch = sys.argv[1]
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
calib, held, heldc, f, fc = common.pictures(fm, prep, calib_files, held_files)
m = fm.built.model
lo, hi = float(min(calib.min(), 0)), float(max(calib.max(), 0))
s = (hi - lo) / 255; zp = np.round(-128 - lo / s)
print('input range', lo, hi, 'scale', s)
for name, x, ref in (('stretch', held, f), ('crop', heldc, fc)):
    xq = (np.clip(np.round(x / s) + zp, -128, 127) - zp) * s
    r = m.predict(xq.astype(np.float32), batch_size=50, verbose=0)
    rep = compare(ref['embedding'], r['embedding'], ref['logits'], r['logits'], labels)
    print(arch, 'input-only int8', name, f"cos {rep['mean_cosine']:.5f} agreement {rep['top1_agreement']:.3f}", flush=True)
