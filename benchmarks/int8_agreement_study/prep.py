"""Calibrate once (minmax stats + per-picture extremes), cache float outputs."""
import os; os.makedirs("/tmp/edgeembed_int8_study", exist_ok=True)
import sys, os, numpy as np, pickle, contextlib, io
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here))
import common
from dataclasses import replace
from converters import quantize, convert as cv
arch = sys.argv[1]
o, fm, prep, calib_files, held_files, labels = common.recipe(arch)
b = fm.built
calib = quantize.load_batch(calib_files, prep, show_progress=False)
held = quantize.load_batch(held_files, prep, show_progress=False)
crop = quantize.float_preprocessor(replace(fm.pre, resize="center_crop", crop_fraction=0.875), b.input_size)
heldc = quantize.load_batch(held_files, crop, show_progress=False)
calibc = quantize.load_batch(calib_files, crop, show_progress=False)
out = {}
for k, x in (("held", held), ("heldc", heldc), ("calib", calib), ("calibc", calibc)):
    r = b.model.predict(x, batch_size=50, verbose=0)
    out[k] = (r["embedding"], r["logits"])
calibrated, idx, lo, hi, sg = common.calibrated_extremes(b.model, calib)
pickle.dump(dict(calibrated=calibrated, idx=idx, lo=lo, hi=hi, out=out, held=held, heldc=heldc, labels=labels,
                 names=[sg.tensors[i].name for i in idx]), open(f"/tmp/edgeembed_int8_study/{arch}.pkl", "wb"))
print("done", len(idx))
