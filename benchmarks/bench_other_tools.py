"""Do the converter's files work in MediaPipe's ImageEmbedder and the TFLite Task Library, embedding as edgeembed does?

Issue 3 asks for the standard TFLite metadata "so that other tools that read it (MediaPipe's ImageEmbedder, the
TFLite Task Library) can use the file too". Each tool clashes with the runtime's or the converter's requirements
(MediaPipe needs opencv-contrib-python, tflite-support protobuf 3), so each runs in a venv of its own:

    python -m venv /tmp/mp && /tmp/mp/bin/pip install mediapipe ai-edge-litert && /tmp/mp/bin/pip install --no-deps -e .
    /tmp/mp/bin/python benchmarks/bench_other_tools.py models/mobilenet_v2_1.0_224_int8.tflite \
        models/efficientnet_lite0_int8.tflite
    python -m venv /tmp/ts && /tmp/ts/bin/pip install tflite-support ai-edge-litert opencv-python-headless \
        && /tmp/ts/bin/pip install --no-deps -e .
    /tmp/ts/bin/python benchmarks/bench_other_tools.py --tool task-library models/*_int8.tflite

Per model, on the imagenet-sample pictures at odd sorted positions (held aside from calibration):
- "same pixels": the tool is given edgeembed's own resized 224x224 picture, so neither resizes: cosine between
  the tool's embedding and edgeembed's (1.0 = the file, its metadata and its edges are read the same way);
- "own resize": the tool is given the whole picture and resizes it itself (its own interpolation);
- top-1 agreement of the "logits" heads (the second output) in both cases.
A file the tool refuses is reported with the tool's error.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGENET = ROOT.parent / "shared" / "data" / "imagenet-sample"
sys.path.insert(0, str(ROOT))


def _mediapipe(model: Path):
    """An embed function (RGB uint8 array -> [head vectors]) over MediaPipe's ImageEmbedder, and its closer."""
    import mediapipe as mp
    from mediapipe.tasks import python as mpt
    from mediapipe.tasks.python import vision

    opts = vision.ImageEmbedderOptions(base_options=mpt.BaseOptions(model_asset_path=str(model)),
                                       l2_normalize=True, quantize=False)
    emb = vision.ImageEmbedder.create_from_options(opts)

    def embed(rgb: np.ndarray) -> list[np.ndarray]:
        res = emb.embed(mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb)))
        return [np.asarray(e.embedding, np.float64) for e in res.embeddings]

    return embed, emb.close, mp.__version__


def _task_library(model: Path):
    """The same over the TFLite Task Library's ImageEmbedder (tflite-support)."""
    from tflite_support.task import core, vision

    emb = vision.ImageEmbedder.create_from_options(vision.ImageEmbedderOptions(base_options=core.BaseOptions(file_name=str(model))))

    def embed(rgb: np.ndarray) -> list[np.ndarray]:
        res = emb.embed(vision.TensorImage.create_from_array(np.ascontiguousarray(rgb)))
        return [np.asarray(e.feature_vector.value, np.float64) for e in res.embeddings]

    from importlib.metadata import version
    return embed, lambda: None, version("tflite-support")


TOOLS = {"mediapipe": _mediapipe, "task-library": _task_library}


def compare(tool: str, model: Path, files: list[Path]) -> dict:
    from converters.quantize import TFLiteRunner  # every output, dequantized (no TensorFlow)
    from edgeembed import Embedder
    from edgeembed.preprocess import read_image

    try:
        embed, close, tool_version = TOOLS[tool](model)
        embed(np.zeros((8, 8, 3), np.uint8))
    except ImportError as exc:  # the tool is not installed here: not a verdict on the file
        raise SystemExit(f"{tool} is not installed in this Python ({exc}); see this script's docstring for its venv")
    except Exception as exc:  # noqa: BLE001 - the tool's refusal is the result
        return {"model": model.name, "tool": tool, "result": "refused", "error": str(exc).splitlines()[-1][:300]}
    cos = {"same_pixels": [], "own_resize": []}
    top1 = {"same_pixels": [], "own_resize": []}
    with Embedder.create_from_model_path(model) as ours:
        cls_out = ours.spec.extra.get("classifier_output")
        outs = ours.interpreter.get_output_details()
        emb_out = [d["index"] for d in outs].index(ours._output["index"])  # the tools give every output in this order
        runner = TFLiteRunner(model.read_bytes())
        for f in files:
            rgb = read_image(f)
            ref = ours.embed(rgb, "RGB")
            ref_logits = runner(ours.preprocessor(rgb, "RGB"))[cls_out][0] if cls_out is not None else None
            resized = ours.preprocessor.resized(rgb, "RGB")  # in the model's colour order; the tools take RGB
            resized = np.ascontiguousarray(resized[:, :, ::-1] if ours.spec.preprocessing.color_order == "BGR" else resized)
            for case, img in (("same_pixels", resized), ("own_resize", rgb)):
                heads = embed(img)
                v = heads[emb_out]
                cos[case].append(float(v @ ref.vector / (np.linalg.norm(v) * np.linalg.norm(ref.vector))))
                if ref_logits is not None:
                    top1[case].append(int(np.argmax(heads[cls_out])) == int(np.argmax(ref_logits)))
    close()
    row = {"model": model.name, "tool": tool, "tool_version": tool_version, "result": "ok", "images": len(files)}
    for case in cos:
        row[case] = {"mean_cosine": round(float(np.mean(cos[case])), 5), "min_cosine": round(float(np.min(cos[case])), 5),
                     "top1_agreement": round(float(np.mean(top1[case])), 4) if top1[case] else None}
    return row


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path)
    p.add_argument("--images", type=int, default=200, help="held-aside pictures (odd sorted positions), default 200")
    p.add_argument("--tool", choices=sorted(TOOLS), default="mediapipe")
    args = p.parse_args()

    files = sorted(IMAGENET.glob("*.jpg"))[1::2][: args.images]
    if not files:
        raise SystemExit(f"no pictures in {IMAGENET} (../shared beside the repository)")
    for m in args.models:
        row = compare(args.tool, m, files)
        row.update(machine=f"{platform.machine()} python {platform.python_version()}",
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
