"""int8 vs float fidelity on held-aside pictures in colour and in grayscale (as a monochrome or NoIR camera sees them)."""
import sys, numpy as np, cv2
_here = __import__("pathlib").Path(__file__).resolve().parent; sys.path.insert(0, str(_here.parents[1]))
from converters import quantize
from edgeembed.preprocess import read_image
from common import IMAGENET

int8_path, float_path = sys.argv[1], sys.argv[2]
from edgeembed.embedder import Embedder
e = Embedder.create_from_model_path(int8_path)
pre = e.spec.preprocessing
prep = quantize.float_preprocessor(pre, 224)
files = quantize.calibration_images(IMAGENET)[1::2]
ri, rf = quantize.TFLiteRunner(open(int8_path, "rb").read()), quantize.TFLiteRunner(open(float_path, "rb").read())
for name, conv in (("colour", lambda im: im), ("gray", lambda im: np.repeat(cv2.cvtColor(im, cv2.COLOR_RGB2GRAY)[..., None], 3, 2))):
    x = prep.normalize(np.stack([prep.resized(conv(read_image(f))) for f in files]))
    oi, of = ri(x), rf(x)
    ei, ef = oi[ri.output_index(1280)], of[rf.output_index(1280)]
    li, lf = oi[1 - ri.output_index(1280)], of[1 - rf.output_index(1280)]
    cos = (ei * ef).sum(1) / np.linalg.norm(ei, axis=1) / np.linalg.norm(ef, axis=1)
    print(f"{name}: mean cosine {cos.mean():.4f} (min {cos.min():.3f}), top-1 agreement {(li.argmax(1) == lf.argmax(1)).mean():.3f}")
