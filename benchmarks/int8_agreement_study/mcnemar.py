"""Query by query, two models on one `edgeembed eval` protocol: which queries only one of them gets right, and the exact McNemar test.

    python benchmarks/int8_agreement_study/mcnemar.py ../shared/data/coil20 4 models/efficientnet_lite0_int8.tflite FLOAT32.tflite
"""
import sys, numpy as np
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from math import comb
from edgeembed.evaluate import split_dataset, _per_label_scores, _rank_of_true
from edgeembed.embedder import Embedder
ds, k = sys.argv[1], int(sys.argv[2])
split = split_dataset(ds, k)
files = [f for _, f in split.gallery] + [f for _, f in split.queries]
labels = np.array([c for c, _ in split.gallery] + [c for c, _ in split.queries]); ng = len(split.gallery)
ok = []
for m in sys.argv[3:5]:
    e = Embedder.create_from_model_path(m)
    x = np.stack([e.embed(str(f)).vector for f in files]).astype(np.float32)
    pl = _per_label_scores(x[ng:], x[:ng], labels[:ng], len(split.classes))
    ok.append(_rank_of_true(pl, labels[ng:]) < 1)
a, b = ok
print(f"A = {sys.argv[3]}: recall@1 {a.mean():.4f}; B = {sys.argv[4]}: recall@1 {b.mean():.4f}")
n01 = int((~a & b).sum()); n10 = int((a & ~b).sum()); n = n01 + n10
p = min(1.0, 2 * sum(comb(n, i) for i in range(0, min(n01, n10) + 1)) / 2 ** n)
print(f"right only in B: {n01}; right only in A: {n10}; exact McNemar two-sided p = {p:.3f}")
