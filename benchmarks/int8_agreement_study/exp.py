import sys, numpy as np, pickle
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
import tensorflow as tf
from tensorflow.lite.python.convert import mlir_quantize
from ai_edge_litert.tools import flatbuffer_utils as fu
from converters import quantize
from converters.fidelity import compare

D = None
def load(arch):
    global D
    D = pickle.load(open(f"/tmp/edgeembed_int8_study/{arch}.pkl", "rb"))
    return D

def build(ranges, shift=0.0, out_range=None, fn=None):
    """ranges: (lo, hi) arrays per idx entry (None entries -> keep minmax). shift: subtract from FC bias.
    out_range: (lo, hi) for the logits output tensor (after shift)."""
    model = fu.read_model_from_bytearray(bytearray(D["calibrated"])); sg = model.subgraphs[0]
    lo, hi = ranges
    outs = [int(i) for i in sg.outputs]
    for j, t in enumerate(D["idx"]):
        qp = sg.tensors[t].quantization
        if lo is not None and not np.isnan(lo[j]):
            qp.min = [float(min(lo[j], 0.0))]; qp.max = [float(max(hi[j], 0.0))]
    # the logits output: output tensor with 1000 values
    lt = [t for t in outs if sg.tensors[t].shape[-1] == 1000][0]
    if shift:
        for op in sg.operators:
            if lt in list(op.outputs):
                assert model.operatorCodes[op.opcodeIndex].builtinCode in (9,), model.operatorCodes[op.opcodeIndex].builtinCode
                bt = sg.tensors[op.inputs[2]]
                buf = model.buffers[bt.buffer]
                bias = np.frombuffer(bytes(buf.data), np.float32).copy() - shift
                buf.data = np.frombuffer(bias.tobytes(), np.uint8)
        qp = sg.tensors[lt].quantization
        qp.min = [qp.min[0] - shift]; qp.max = [qp.max[0] - shift]
    if out_range is not None:
        qp = sg.tensors[lt].quantization
        qp.min = [float(min(out_range[0], 0))]; qp.max = [float(max(out_range[1], 0))]
    cal = bytes(fu.convert_object_to_bytearray(model))
    m = mlir_quantize(cal, False, input_data_type=tf.int8, output_data_type=tf.int8)
    if fn: open(fn, "wb").write(m)
    return m

def evaluate(m, tag=""):
    r = quantize.TFLiteRunner(m)
    ei = r.output_index(1280 if D["out"]["held"][0].shape[1] == 1280 else D["out"]["held"][0].shape[1]); ci = 1 - ei
    res = {}
    for k in ("held", "heldc"):
        o = r(D[k])
        fe, fl = D["out"][k]
        rep = compare(fe, o[ei], fl, o[ci], D["labels"])
        res[k] = (round(rep["mean_cosine"], 4), rep["top1_agreement"], round(-rep["top1_drop_points"], 1))
    print(f"{tag:40s} stretch cos/agr/drop {res['held']}  crop {res['heldc']}", flush=True)
    return res

def mean_ranges(keep_io=True):
    lo, hi = D["lo"].mean(0), D["hi"].mean(0)
    return lo, hi
