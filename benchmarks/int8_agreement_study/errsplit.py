"""Where the shipped recipe's remaining int8 error sits: the tuned model's simulated loss with int8 on everything, on
the weights only, and on the weights plus one kind of activation tensor at a time (500 held-aside pictures, stretch).
usage: errsplit.py ARCH [EPOCHS (0: before tuning only) [TENSOR,...]] [--float-weights] [--equalize-projections]
(the shipped recipe: input folded, channels equalized, tuned in pre-equalization units; with TENSORs, only: after tuning, each one left float,
clipped without rounding, its range widened; --float-weights: the tuning keeps the weights float (a bound, not a model
TFLite can hold): how low the int8 activations alone let the error go when the weights are free to make up for them;
--equalize-projections: the depthwise ReLU6 outputs that feed a projection are equalized too, by the same rule (the
option tried at commit fcd87d0), before tuning only: what that does to the int8 activations' share of the error)
"""
import re, sys, time, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import qat, equalize

FLOAT_WEIGHTS = "--float-weights" in sys.argv
PROJECTIONS = "--equalize-projections" in sys.argv
sys.argv = [a for a in sys.argv if a not in ("--float-weights", "--equalize-projections")]
arch = sys.argv[1]; epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 3
calib, held, f, m, input_range, scales = common.shipped_before_tuning(arch)


def projection_pairs(model):
    """(depthwise unit, projection) for every depthwise -> batch norm -> ReLU6 whose output feeds one convolution only."""
    import keras

    return [(u, nxt[0]) for u in qat.weight_units(model) if qat._is_dw(u.layer) and isinstance(u.act, keras.layers.ReLU)
            for nxt in [qat._consumers(u.act, model)]
            if len(nxt) == 1 and type(nxt[0]) is keras.layers.Conv2D and nxt[0].groups == 1]


if PROJECTIONS:  # equalize.equalize's rule on these pairs; its factors only matter to a tuning, which is not run then
    depthwise_pairs, equalize.relu6_depthwise_pairs = equalize.relu6_depthwise_pairs, projection_pairs
    print("depthwise -> projection pairs equalized:", len(equalize.equalize(m, calib, 2.0)) // 2, flush=True)
    equalize.relu6_depthwise_pairs = depthwise_pairs
ref = [f["embedding"], f["logits"]]
var = [float(np.var(t)) for t in qat._as_list(m.predict(calib, batch_size=50, verbose=0))]


def kind(name: str) -> str:
    """The group an activation tensor is measured in: the linear tensors together, every other one by itself."""
    if re.search("project_bn|_add", name):
        return LINEAR
    return name


LINEAR = "projections and residual adds (linear)"


PROBE = sys.argv[3].split(",") if len(sys.argv) > 3 else None  # tensors whose range is varied after tuning


def split(tag):
    import keras, tensorflow as tf

    units = qat.weight_units(m)
    folded = {id(u.layer): qat._Folded(tf, u) for u in units}
    ranges = qat.activation_ranges(m, calib)
    skipped = {id(x) for u in units for x in (u.bn, u.act) if x is not None}
    by_first = {id(u.layer): u for u in units}
    names = {}
    for layer in qat._operations(m):
        if id(layer) in by_first:
            names[id(by_first[id(layer)].last)] = by_first[id(layer)].last.name
        elif type(layer).__name__ not in qat._NO_QUANT and id(layer) not in skipped:
            names[id(layer)] = layer.name
    kinds = sorted({kind(n) for n in names.values()})
    print(tag, "activation tensors by kind:", {k: sum(kind(n) == k for n in names.values()) for k in kinds}, flush=True)

    def forward_fn(quant_w, act_on, override=None, clip_only=()):
        def fq(x, lid):
            n = names.get(lid, "")
            if not act_on(n):
                return x
            r = (override or {}).get(n, ranges[lid])
            if n in clip_only:
                return tf.clip_by_value(x, r[0], r[1])
            return tf.quantization.fake_quant_with_min_max_vars(x, r[0], r[1], num_bits=8)

        def forward(x):
            values = {id(m.inputs[0]): tf.quantization.fake_quant_with_min_max_vars(x, *input_range, num_bits=8)
                      if act_on("input") else x}
            for layer in qat._operations(m):
                if isinstance(layer, keras.layers.InputLayer) or id(layer) in skipped:
                    continue
                node = layer._inbound_nodes[0]
                if id(layer) in by_first:
                    unit = by_first[id(layer)]; fd = folded[id(layer)]
                    xin = values[id(node.input_tensors[0])]
                    y = qat.apply_unit(tf, unit, xin, fd.quantized_kernel(tf) if quant_w else fd.kernel, fd.folded_bias())
                    values[id(qat._out(unit.last))] = fq(y, id(unit.last))
                    continue
                args, kwargs = node.arguments.fill_in(values)
                y = layer(*args, **kwargs)
                if type(layer).__name__ not in qat._NO_QUANT:
                    y = fq(y, id(layer))
                values[id(qat._out(layer))] = y
            return [values[id(t)] for t in m.outputs]
        return tf.function(forward, reduce_retracing=True)

    def measure(label, quant_w, act_on, override=None, clip_only=()):
        fn = forward_fn(quant_w, act_on, override, clip_only)
        outs = [np.concatenate(c) for c in zip(*[[a.numpy() for a in fn(tf.constant(held[i:i + 50]))]
                                                  for i in range(0, len(held), 50)])]
        parts = [float(np.mean((a - t) ** 2)) / v for a, t, v in zip(outs, ref, var)]
        d = outs[1] - ref[1]
        top = ref[1].argmax(1)
        second = np.argsort(ref[1], 1)[:, -2]
        r = np.arange(len(top))
        margin_err = (d[r, top] - d[r, second])
        print(f"{tag} {label:45s} loss {sum(parts):.4f} (emb {parts[0]:.4f} logits {parts[1]:.4f})"
              f" logit err rms {np.sqrt(np.mean(d ** 2)):.3f} top1-top2 margin err rms {np.sqrt(np.mean(margin_err ** 2)):.3f}"
              f" agreement {(outs[1].argmax(1) == top).mean():.3f}", flush=True)

    if PROBE and tag == "tuned":
        measure("all int8", True, lambda n: True)
        for n in PROBE:
            lid = next(k for k, v in names.items() if v == n)
            lo, hi = ranges[lid]
            print(tag, n, "range", (round(lo, 3), round(hi, 3)), flush=True)
            measure(f"{n} float", True, lambda x, n=n: x != n)
            measure(f"{n} clipped only", True, lambda x: True, clip_only=(n,))
            for f in (1.5, 2.0, 2.6):
                measure(f"{n} range x{f}", True, lambda x: True, {n: (lo * f, min(hi * f, 6.0))})
        return
    if PROBE:
        return
    measure("float (check: 0)", False, lambda n: False)
    measure("int8 weights, float activations", True, lambda n: False)
    measure("float weights, int8 activations", False, lambda n: True)
    measure("float weights, int8 linear tensors only", False, lambda n: kind(n) == LINEAR)
    measure("float weights, int8 activations but the linear", False, lambda n: kind(n) != LINEAR)
    measure("all int8", True, lambda n: True)
    if PROJECTIONS:
        return
    for k in kinds:
        measure(f"int8 weights + only {k}", True, lambda n, k=k: kind(n) == k)
    measure("int8 weights + only input", True, lambda n: n == "input")


split("PTQ")
if PROJECTIONS or epochs == 0:
    sys.exit()
t = time.time()
if FLOAT_WEIGHTS:  # the tuning's simulation and its write-back use the weights as they are, not on the int8 grid
    _rounded = qat._Folded.quantized_kernel
    qat._Folded.quantized_kernel = qat._Folded.folded_kernel
qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs), show_progress=False, log=print, held=held, input_range=input_range,
              channel_scale=scales)
print(f"tuning {time.time() - t:.0f} s", flush=True)
if FLOAT_WEIGHTS:
    qat._Folded.quantized_kernel = _rounded
split("tuned-float-weights" if FLOAT_WEIGHTS else "tuned")
