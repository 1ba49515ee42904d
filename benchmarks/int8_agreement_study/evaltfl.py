"""A bare .tflite (no edgeembed metadata) through eval's protocol: pictures enlarged as the runtime does (stretch,
OpenCV linear on uint8), fed as (pixel - C) / K (per channel if C, K are comma lists), embedding L2-normalised.

    python benchmarks/int8_agreement_study/evaltfl.py MODEL.tflite C K DATASET GALLERY_PER_CLASS
"""
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from converters.quantize import TFLiteRunner
from edgeembed.evaluate import evaluate
from edgeembed.preprocess import read_image, resize
from edgeembed.spec import Preprocessing

path, C, K, dataset, k = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
C = np.array([float(v) for v in C.split(",")], np.float32)
K = np.array([float(v) for v in K.split(",")], np.float32)
run = TFLiteRunner(Path(path).read_bytes())
size = int(run.inp["shape"][1])
dims = [int(np.prod(d["shape"][1:])) for d in run.outs]
emb = run.output_index(max(d for d in dims if d != 1000))
pre = Preprocessing(resize="stretch")  # only the resize is taken from it; C and K are applied below


def featurize(p):
    u = resize(read_image(p), (size, size), pre).astype(np.float32)
    e = run(((u - C) / K)[None])[emb][0]
    return e / np.linalg.norm(e)


r = evaluate(dataset, k, featurize, show_progress=False)
print(Path(path).name, Path(dataset).name, k, "recall@1", r["recall@1"], "queries", r["queries"])
