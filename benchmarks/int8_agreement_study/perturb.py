"""How much top-1 agreement moves when the weights move by float rounding only (MobileNetV2, shipped recipe before tuning).

The folded kernels are fed to the tuning's int8 simulation (qat._forward_fn) twice: as they are, and as the tuning holds
them after equalization (divided by the channel factor, multiplied back: at most ~5e-7 apart). With int8 activations a
change that small flips roundings that cascade into whole int8 steps of the logits, and top-1 agreement with the float
model on the 500 held-aside pictures moves with it.
With N: the shipped recipe tuned (EPOCHS, default 3), then its int8 simulation N times more with every bias moved by a
relative 1e-6 (Gaussian, seeds 0..N-1): the spread of top-1 agreement over models that are the same to float rounding.
usage: perturb.py [ARCH [N [EPOCHS]]]
"""
import sys, numpy as np
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import qat
import tensorflow as tf

arch = sys.argv[1] if len(sys.argv) > 1 else "mobilenet_v2"
n_perturbed = int(sys.argv[2]) if len(sys.argv) > 2 else 0
epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
calib, held, f, m, input_range, scales = common.shipped_before_tuning(arch)
top = f["logits"].argmax(1)
units = qat.weight_units(m)
ranges = qat.activation_ranges(m, calib)
rounded = qat._Folded.quantized_kernel


ref = {}
for weights in ("int8", "float"):
    qat._Folded.quantized_kernel = rounded if weights == "int8" else qat._Folded.folded_kernel
    for tag, factors in (("kernels as folded", {}), ("kernels through the channel factors", scales)):
        folded = {id(u.layer): qat._Folded(tf, u, factors.get(u.layer.name)) for u in units}
        fwd = tf.function(qat._forward_fn(tf, m, units, folded, ranges, input_range))
        logits = np.concatenate([fwd(tf.constant(held[i:i + 50]))[1].numpy() for i in range(0, len(held), 50)])
        kernels = {k: fd.folded_kernel().numpy() for k, fd in folded.items()}
        if weights not in ref:
            ref[weights] = (kernels, logits)
            line = ""
        else:
            k0, l0 = ref[weights]
            dk = max(float(np.abs(kernels[k] - k0[k]).max()) for k in kernels)
            dl = np.abs(logits - l0)
            line = (f"; kernels differ by <= {dk:.1e}, logits by <= {dl.max():.2f} (pictures with any change: "
                    f"{(dl.max(1) > 0).mean():.0%})")
        print(f"{weights} weights, int8 activations, {tag}: top-1 agreement {(logits.argmax(1) == top).mean():.3f}{line}",
              flush=True)
qat._Folded.quantized_kernel = rounded

if n_perturbed:
    qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs), show_progress=False, input_range=input_range,
                  channel_scale=scales)
    ranges = qat.activation_ranges(m, calib)  # as the converter calibrates the tuned model
    folded = {id(u.layer): qat._Folded(tf, u) for u in units}
    fwd = tf.function(qat._forward_fn(tf, m, units, folded, ranges, input_range))
    biases = {k: fd.bias.numpy() for k, fd in folded.items()}
    found = []
    for seed in range(-1, n_perturbed):
        rng = np.random.default_rng(seed) if seed >= 0 else None
        for k, fd in folded.items():
            b = biases[k]
            fd.bias.assign(b if rng is None else (b * (1 + 1e-6 * rng.standard_normal(b.shape))).astype(np.float32))
        logits = np.concatenate([fwd(tf.constant(held[i:i + 50]))[1].numpy() for i in range(0, len(held), 50)])
        a = float((logits.argmax(1) == top).mean())
        print(f"tuned {epochs}, all int8, biases {'as tuned' if rng is None else f'x (1 + 1e-6 N(0,1)), seed {seed}'}: "
              f"top-1 agreement {a:.3f}", flush=True)
        if rng is not None:
            found.append(a)
    print(f"over {n_perturbed} perturbations: mean {np.mean(found):.4f}, sd {np.std(found, ddof=1):.4f}, "
          f"range {min(found):.3f}-{max(found):.3f}", flush=True)
