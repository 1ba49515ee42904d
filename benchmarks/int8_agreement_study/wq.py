"""Float activations, int8 per-channel weights (BN folded as TFLite folds it): how much do the weights alone cost?"""
import sys, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1])); sys.path.insert(0, str(_here))
import common
from converters import quantize, convert as cv
from converters.fidelity import compare
import exp, keras
arch = sys.argv[1]; ONLY = sys.argv[2]  # all | dw | pw | dense
D = exp.load(arch)
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
layers = {l.name: l for l in m.layers}
n = 0
for name, l in layers.items():
    if not isinstance(l, keras.layers.BatchNormalization): continue
    cname = name[:-3] if name[:-3] in layers else name.replace("_bn", "_conv")
    c = layers[cname]
    isdw = isinstance(c, keras.layers.DepthwiseConv2D)
    if ONLY == "dense" or (ONLY == "dw" and not isdw) or (ONLY == "pw" and isdw): continue
    g, beta, mu, var = l.get_weights(); f = g / np.sqrt(var + l.epsilon)
    w = c.get_weights()
    k = w[0]
    dw = isinstance(c, keras.layers.DepthwiseConv2D)
    kf = k * (f[None, None, :, None] if dw else f[None, None, None, :])
    ax = (0, 1, 3) if dw else (0, 1, 2)
    s = np.abs(kf).max(ax, keepdims=True) / 127.0; s[s == 0] = 1
    kq = np.round(kf / s) * s
    w[0] = kq / (f[None, None, :, None] if dw else f[None, None, None, :]); c.set_weights(w); n += 1
d = layers.get("logits") or [l for l in m.layers if isinstance(l, keras.layers.Dense)][0]
w = d.get_weights()
if ONLY in ("all", "dense"): s = np.abs(w[0]).max(0, keepdims=True) / 127.0; w[0] = np.round(w[0] / s) * s; d.set_weights(w)
print("quantized", n, "conv layers + dense", d.name)
for k in ("held", "heldc"):
    r = m.predict(D[k], batch_size=50, verbose=0)
    fe, fl = D["out"][k]
    rep = compare(fe, r["embedding"], fl, r["logits"], D["labels"])
    print(f"weights-only int8 [{ONLY}] {k}: cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f} drop {-rep['top1_drop_points']:+.1f}")
