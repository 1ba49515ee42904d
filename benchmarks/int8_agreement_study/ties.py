"""Ties in the int8 logits, the float model's own top-1 / top-2 margins, and the agreement those margins predict.

usage: ties.py INT8.tflite FLOAT32.tflite [crop]
Each model is fed the 500 held-aside pictures with its own preprocessing (an input-folded int8 model takes (pixel - C) / K,
its float32 twin ImageNet's normalisation). The last lines model the int8 top-1 / top-2 margin as the float margin plus a
Gaussian error of a given rms (the margin error errsplit.py measures): the agreement that error predicts on these pictures.
"""
import sys
from dataclasses import replace
from math import erf, sqrt
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from converters import quantize  # noqa: E402
from edgeembed.embedder import Embedder  # noqa: E402

i8, f32 = sys.argv[1], sys.argv[2]
crop = len(sys.argv) > 3 and sys.argv[3] == "crop"
files = quantize.calibration_images(str(Path(__file__).resolve().parents[3] / "shared/data/imagenet-sample"))
held = files[1::2]


def logits(path):
    with Embedder.create_from_model_path(path) as e:
        pre = e.spec.preprocessing
    if crop:
        pre = replace(pre, resize="center_crop", crop_fraction=0.875)
    run = quantize.TFLiteRunner(open(path, "rb").read())
    out = run(quantize.load_batch(held, quantize.float_preprocessor(pre, 224), show_progress=False))
    c = 1 - run.output_index(1280)
    return out[c], run.outs[c]["quantization"][0]


li, step = logits(i8)
lf, _ = logits(f32)
ai, af = li.argmax(1), lf.argmax(1)
dis = ai != af
mx = li.max(1, keepdims=True)
tied = (li == mx).sum(1) > 1
float_in_tie = tied & (li[np.arange(len(af)), af] == mx[:, 0])
srt = np.sort(lf, 1)
margin = srt[:, -1] - srt[:, -2]
print(f"int8 logits step {step:.3f}; top-1 agreement {1 - dis.mean():.3f} ({dis.sum()} disagreements)")
print(f"pictures with a tie at the int8 maximum: {tied.sum()}; disagreements that are such a tie with the float top-1 "
      f"among the tied: {(dis & float_in_tie).sum()}; counting every such tie as half right: "
      f"{1 - (dis & ~float_in_tie).mean() - 0.5 * float_in_tie.mean():.3f}")
print("float top-1 / top-2 margins of the disagreements:", np.round(np.sort(margin[dis]), 2))
print(f"float margin below one int8 step: {(margin < step).sum()} pictures, below 0.25: {(margin < 0.25).mean():.1%}, "
      f"below 0.5: {(margin < 0.5).mean():.1%}")
for sigma in (0.2, 0.25, 0.264, 0.3, 0.318, 0.365, 0.46):
    flip = np.array([0.5 * (1 + erf(-g / (sigma * sqrt(2)))) for g in margin])
    print(f"margin error rms {sigma}: predicted top-1 agreement {1 - flip.mean():.3f}")
