import os; os.makedirs("/tmp/edgeembed_int8_study", exist_ok=True)
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from pathlib import Path
from converters import quantize
from edgeembed.tflite_file import read_tflite
from edgeembed.spec import ModelSpec
from dataclasses import replace
import json
name, fl = sys.argv[1], sys.argv[2]
crop = len(sys.argv) > 3
i8 = open(name, "rb").read(); f32 = open(fl, "rb").read()
from edgeembed.embedder import Embedder
e = Embedder.create_from_model_path(name); spec = e.spec if hasattr(e, "spec") else None
pre = spec.preprocessing
if crop: pre = replace(pre, resize="center_crop", crop_fraction=0.875)
files = quantize.calibration_images(str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/imagenet-sample"))
held = files[1::2]; lab = np.arange(1, len(files), 2)
x = quantize.load_batch(held, quantize.float_preprocessor(pre, 224), show_progress=False)
ri, rf = quantize.TFLiteRunner(i8), quantize.TFLiteRunner(f32)
ci = 1 - ri.output_index(1280); cf = 1 - rf.output_index(1280)
print("int8 logits quant", ri.outs[ci]["quantization"])
oi = ri(x); of = rf(x)
li, lf = oi[ci], of[cf]
np.savez(f"/tmp/edgeembed_int8_study/{Path(name).stem}{'_crop' if crop else ''}.npz", li=li, lf=lf, ei=oi[1-ci], ef=of[1-cf])
ai, af = li.argmax(1), lf.argmax(1)
dis = ai != af
print("agreement", 1 - dis.mean(), "disagreements", dis.sum())
mx = li.max(1, keepdims=True)
ties = (li == mx).sum(1)
print("pictures with tied int8 max", (ties > 1).sum(), "of which disagree", (dis & (ties > 1)).sum())
# float class among tied int8 maxima
fin = li[np.arange(len(af)), af] == mx[:, 0]
print("disagreements where float top-1 is among int8 tied max", (dis & fin).sum())
s = ri.outs[ci]["quantization"][0]
# float top1-top2 gap in units of int8 step
srt = np.sort(lf, 1); gap = (srt[:, -1] - srt[:, -2]) / s
print("float gap (steps) for disagreements", np.round(np.sort(gap[dis]), 2))
print("int8 rank of float top1 on disagreements", [(li[k] > li[k, af[k]]).sum() for k in np.where(dis)[0]])
print("logit range float", lf.min(), lf.max(), "per-pic max mean", lf.max(1).mean(), "min of per-pic max", lf.max(1).min())
print("acc float", (af == lab).mean(), "int8", (ai == lab).mean())
