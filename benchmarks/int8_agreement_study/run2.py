import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from exp import *
arch = sys.argv[1]
D = load(arch)
lo, hi = D["lo"], D["hi"]
m_ = fu.read_model_from_bytearray(bytearray(D["calibrated"])); sg = m_.subgraphs[0]
keep = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
kj = [j for j, t in enumerate(D["idx"]) if t in keep]
def R(l, h):
    l, h = l.copy(), h.copy(); l[kj] = np.nan; return l, h
mlo, mhi = lo.mean(0), hi.mean(0)
Mlo, Mhi = lo.min(0), hi.max(0)
relu6 = (Mhi >= 5.99) & (Mlo >= 0)
print("relu6-saturating tensors", np.where(relu6)[0].tolist())
l, h = mlo.copy(), mhi.copy(); h[relu6] = 6.0
evaluate(build(R(l, h)), "mean, relu6-saturating -> [0,6]")
relu = Mlo >= 0
l, h = Mlo.copy(), Mhi.copy(); l[~relu], h[~relu] = mlo[~relu], mhi[~relu]
evaluate(build(R(l, h)), "minmax for relu outputs, mean for linear")
l, h = mlo.copy(), mhi.copy(); l[~relu], h[~relu] = Mlo[~relu], Mhi[~relu]
evaluate(build(R(l, h)), "mean for relu outputs, minmax for linear")
for q in (75, 90):
    l, h = mlo.copy(), mhi.copy(); l[~relu] = np.percentile(lo, 100 - q, axis=0)[~relu]; h[~relu] = np.percentile(hi, q, axis=0)[~relu]
    evaluate(build(R(l, h)), f"mean relu, p{q} linear")
    l, h = mlo.copy(), mhi.copy(); h[relu] = np.percentile(hi, q, axis=0)[relu]
    evaluate(build(R(l, h)), f"p{q} relu, mean linear")
