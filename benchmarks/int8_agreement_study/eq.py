"""ReLU6-bounded channel equalization before a depthwise convolution, then PTQ (and optionally int8-aware tuning).

Each channel c of a ReLU6 output that feeds a depthwise convolution is scaled up by s_c = 6 / (h * M_c), M_c its
largest value over the calibration pictures (channels that reach 6 keep s = 1), and the depthwise kernel's channel c is
divided by s_c. Both layers are quantized per channel, so their int8 weights do not change; only the per-tensor int8
activation between them gets every channel spread over the whole range. Float outputs are unchanged wherever the channel
stays below its calibration maximum times h.
usage: eq.py ARCH H [EPOCHS]
"""
import sys, time, numpy as np
from dataclasses import replace
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
import common
from converters import quantize, qat
from converters.fidelity import compare

arch = sys.argv[1]; h = float(sys.argv[2]); epochs = int(sys.argv[3]) if len(sys.argv) > 3 else 0
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
m = fm.built.model
crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), fm.built.input_size)
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
heldc = quantize.load_batch(held_files, crop, show_progress=False)
f = m.predict(held, batch_size=50, verbose=0); fc = m.predict(heldc, batch_size=50, verbose=0)


def report(model_bytes, tag):
    run = quantize.TFLiteRunner(model_bytes)
    for name, x, ref in (("stretch", held, f), ("crop", heldc, fc)):
        outs = run(x)
        rep = compare(ref["embedding"], outs[run.output_index(fm.built.embedding_dim)], ref["logits"], outs[run.output_index(1000)], labels)
        print(f"{tag} {name}: cos {rep['mean_cosine']:.4f} agreement {rep['top1_agreement']:.3f} drop {rep['top1_drop_points']:+.1f}", flush=True)


pairs = common.relu6_depthwise_pairs(m)
print(len(pairs), "ReLU6 -> depthwise pairs", flush=True)
tot = common.equalize(m, pairs, calib, h)
print("median scale per pair", np.round(tot, 1), flush=True)
g = m.predict(held, batch_size=50, verbose=0)
print("float logits max abs change (held-aside):", float(np.abs(g["logits"] - f["logits"]).max()),
      "top-1 same:", float((g["logits"].argmax(1) == f["logits"].argmax(1)).mean()), flush=True)
report(quantize.to_tflite(m, [calib], "int8", False, "mean"), f"PTQ eq h={h}")
if epochs:
    t = time.time()
    qat.fine_tune(m, calib, qat.QatOptions(epochs=epochs), show_progress=False, log=print, held=held)
    print(f"tuning {time.time() - t:.0f} s", flush=True)
    b = quantize.to_tflite(m, [calib], "int8", False, "mean")
    open(f"/tmp/eq/eq_{arch}_{h}_{epochs}.tflite", "wb").write(b)
    report(b, f"tuned{epochs} eq h={h}")
