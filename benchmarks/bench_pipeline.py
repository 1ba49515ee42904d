"""End-to-end live-pipeline throughput on a video file vs invoke-only throughput of the same model.

Baseline (invoke-only): the same Embedder's interpreter on input tensors prepared in advance,
``set_tensor`` + ``invoke`` + ``get_tensor`` per frame, nothing else. Measured (end to end):
``edgeembed.pipeline.Pipeline`` on the video file: decode on the capture thread, BGR->RGB,
resize + quantize, invoke, dequantize + normalise, gallery search, smoothing, events and the
JSON line of every frame (written to an in-memory stream). The two alternate in short rounds in
one process (order flipped every round), so machine load hits both alike; the figure is the
median of the per-round ratios end-to-end fps / invoke-only fps.

    python benchmarks/bench_pipeline.py [--model M] [--threads 1] [--frames 150] [--size 640x480] [--rounds 15]
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> list[Path]:
    """A camera-like MJPG clip from imagenet-sample photos, each held for 10 frames."""
    files = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    used = []
    for i in range(frames):
        f = files[(i // 10) % len(files)]
        if not used or used[-1] != f:
            used.append(f)
        w.write(cv2.resize(cv2.imread(str(f)), size, interpolation=cv2.INTER_AREA))
    w.release()
    return used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(SHARED / "models/mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--size", default="640x480", help="clip frame size WxH")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    from edgeembed import Embedder
    from edgeembed.gallery import Gallery
    from edgeembed.live import limit_opencv_threads
    from edgeembed.outputs import JsonLinesSink
    from edgeembed.pipeline import ImageProcessor, Pipeline, stage_summary
    from edgeembed.preprocess import read_image
    from edgeembed.recognizer import binding_for
    from edgeembed.smoothing import TrackSmoother
    from edgeembed.sources import open_source

    limit_opencv_threads()  # as `edgeembed recognize` does for live sources
    size = tuple(int(v) for v in args.size.split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_pipeline_"))
    clip = tmp / "clip.avi"
    used = write_clip(clip, args.frames, size)
    emb = Embedder.create_from_model_path(args.model, num_threads=args.threads)
    gallery = Gallery.create(tmp / "gallery", binding_for(emb))  # 100 labels to search, 30 of them in the clip
    extra = sorted((SHARED / "data/imagenet-sample").glob("*.jpg"))[500:570]
    items = used + extra
    gallery.add([p.stem for p in items], np.stack([emb.embed(read_image(p)).vector for p in items]),
                [str(p) for p in items])

    cap = cv2.VideoCapture(str(clip))
    tensors = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        tensors.append(emb.preprocessor(bgr[:, :, ::-1]))
    cap.release()
    interp = emb.interpreter
    inp, out = emb._input["index"], emb._output["index"]

    def invoke_only() -> float:
        t0 = time.perf_counter()
        for t in tensors:
            interp.set_tensor(inp, t)
            interp.invoke()
            interp.get_tensor(out)
        return len(tensors) / (time.perf_counter() - t0)

    last = {}

    def end_to_end() -> float:
        sink = JsonLinesSink(io.StringIO())
        with open_source(str(clip)) as src:
            stats = Pipeline(src, ImageProcessor(emb, gallery, top_k=3), TrackSmoother(5), [sink]).run()
        assert stats.frames == len(tensors), (stats.frames, len(tensors))
        last["stats"] = stats
        return stats.fps

    invoke_only(), end_to_end()  # warm-up
    base, e2e = [], []
    for i in range(args.rounds):
        if i % 2:
            e2e.append(end_to_end())
            base.append(invoke_only())
        else:
            base.append(invoke_only())
            e2e.append(end_to_end())
    ratios = [e / b for e, b in zip(e2e, base)]
    result = {
        "model": Path(args.model).name, "threads": args.threads, "frames": len(tensors), "size": args.size,
        "rounds": args.rounds, "gallery_entries": len(gallery),
        "invoke_only_fps": round(statistics.median(base), 2), "end_to_end_fps": round(statistics.median(e2e), 2),
        "ratio": round(statistics.median(ratios), 4),
        "ratio_quartiles": [round(float(q), 4) for q in np.percentile(ratios, [25, 75])],
        "stages_ms_last_round": stage_summary(last["stats"]),
        "machine": f"{platform.machine()}, {platform.processor() or platform.platform()}, Python {platform.python_version()}",
    }
    gallery.close()
    emb.close()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['model']} threads={args.threads} {result['frames']} frames {args.size}: invoke-only "
              f"{result['invoke_only_fps']} fps, end to end {result['end_to_end_fps']} fps, ratio {result['ratio']} "
              f"(quartiles {result['ratio_quartiles']})")
        for k, v in result["stages_ms_last_round"].items():
            print(f"  {k:<11} mean {v['mean']:7.2f} ms  p50 {v['p50']:7.2f}  p95 {v['p95']:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
