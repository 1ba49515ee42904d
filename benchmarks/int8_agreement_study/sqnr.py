import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from exp import *
arch = sys.argv[1]
D = load(arch)
lo, hi = D["lo"], D["hi"]
m_ = fu.read_model_from_bytearray(bytearray(D["calibrated"])); sg = m_.subgraphs[0]
keep = set(int(i) for i in sg.inputs) | set(int(i) for i in sg.outputs)
kj = [j for j, t in enumerate(D["idx"]) if t in keep]
l, h = lo.mean(0), hi.mean(0); l[kj] = np.nan
q = build((l, h))
I = quantize._litert()
fi = I(model_content=D["calibrated"], experimental_preserve_all_tensors=True); fi.allocate_tensors()
qi = I(model_content=q, experimental_preserve_all_tensors=True); qi.allocate_tensors()
fdet = {d["name"]: d for d in fi.get_tensor_details()}
qdet = {d["name"]: d for d in qi.get_tensor_details()}
names = [n for n in fdet if n in qdet and fdet[n]["dtype"] == np.float32 and qdet[n]["dtype"] == np.int8 and len(fdet[n]["shape"]) == 4]
x = D["held"][:40]
qin = qi.get_input_details()[0]; s, z = qin["quantization"]
acc = {n: [0.0, 0.0, 0.0] for n in names}
for row in x:
    fi.set_tensor(fi.get_input_details()[0]["index"], row[None]); fi.invoke()
    qi.set_tensor(qin["index"], np.clip(np.rint(row[None] / s + z), -128, 127).astype(np.int8)); qi.invoke()
    for n in names:
        a = fi.get_tensor(fdet[n]["index"]); qq = qdet[n]["quantization"]
        b = (qi.get_tensor(qdet[n]["index"]).astype(np.float32) - qq[1]) * qq[0]
        acc[n][0] += float(((a - b) ** 2).sum()); acc[n][1] += float((a ** 2).sum())
        hi_ = (qq[0] * (127 - qq[1]))
        acc[n][2] += float((a > hi_ + qq[0]).mean())
for n in names:
    e, p, c = acc[n]
    print(f"{10*np.log10(p/e):6.1f} dB  clipped {c/len(x)*100:6.3f}%  {n[-55:]}")
