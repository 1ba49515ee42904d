import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from exp import *
arch = sys.argv[1]
D = load(arch)
import exp
names = D["names"]; lo, hi = D["lo"], D["hi"]
li = [j for j, n in enumerate(names)]
fl = D["out"]["calib"][1]
pm = fl.max(1)
print("calib logits min/max", fl.min(), fl.max(), "per-pic max: min", pm.min(), "p1", np.percentile(pm, 1), "mean", pm.mean())
mlo, mhi = lo.mean(0), hi.mean(0)
# keep io with full minmax (as shipped)
m_ = fu.read_model_from_bytearray(bytearray(D["calibrated"])); sg = m_.subgraphs[0]
keep = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
base_lo, base_hi = mlo.copy(), mhi.copy()
for j, t in enumerate(D["idx"]):
    if t in keep: base_lo[j] = np.nan
evaluate(build((None, None)), "minmax")
evaluate(build((base_lo, base_hi)), "mean (shipped)")
evaluate(build((base_lo, base_hi), out_range=(0, fl.max())), "mean, logits [0,max]")
for low in (pm.min(), np.percentile(pm, 1), np.percentile(pm, 5)):
    top = fl.max()
    evaluate(build((base_lo, base_hi), shift=low, out_range=(0, top - low)), f"mean, logits shift {low:.1f} range [0,{top-low:.1f}]")
