import sys; sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from exp import *
D = load("mobilenet_v2")
I = quantize._litert()
fi = I(model_content=D["calibrated"], experimental_preserve_all_tensors=True); fi.allocate_tensors()
det = {d["name"]: d for d in fi.get_tensor_details()}
want = [n for n in det if any(k in n for k in ("b13_add_1/Add", "b14_project_bn_1/batchnorm/sub1", "b15_add_1/Add", "b16_add_1/Add", "b12_add_1/Add")) and det[n]["dtype"] == np.float32 and len(det[n]["shape"]) == 4]
mx = {n: [] for n in want}
for row in D["held"][::5]:
    fi.set_tensor(fi.get_input_details()[0]["index"], row[None]); fi.invoke()
    for n in want:
        mx[n].append(np.abs(fi.get_tensor(det[n]["index"])).max((0, 1, 2)))
for n in want:
    a = np.array(mx[n]); cm = a.max(0); typ = np.median(a, 0)
    o = np.argsort(cm)[::-1]
    print(n[-45:], "channels", len(cm), "top channel maxima", np.round(cm[o[:6]], 1), "median of channel maxima", np.round(np.median(cm), 2), "top ch", o[:6])
