"""Does `recognize` hold its memory over a long run? RSS of the real command, sampled from /proc, per frame.

A Pi runs `recognize` for days: anything kept per frame grows without bound (per-frame stage timings were, at
~230 B a frame). This writes a long MJPEG video of COIL-20 views (../shared), enrols one object with the
shipped MobileNetV2, runs `edgeembed recognize --json` on the video for each checkout given (baseline side by
side: e.g. a `git worktree` of an older commit), samples VmRSS every 2 s and reports the growth per frame
between the first sample after --warmup frames and the end.

    python benchmarks/bench_long_run_memory.py [--frames 36000] [--warmup 6000] [CHECKOUT ...]
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def write_video(path: Path, frames: int) -> None:
    import cv2

    views = [cv2.imread(str(p)) for p in sorted((DATA / "coil20").glob("obj0[1-5]/*.png"))]
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, (128, 128))
    for i in range(frames):
        out.write(views[i % len(views)])
    out.release()


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def run(checkout: Path, gallery: Path, video: Path, out: Path, warmup: int) -> dict:
    cmd = [sys.executable, "-m", "edgeembed.cli", "recognize", "--gallery", str(gallery), "--source", str(video),
           "--json"]
    samples = []  # (frames answered so far, RSS kB)
    t0 = time.monotonic()
    with open(out, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=checkout, stdout=sink, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            time.sleep(2)
            kb = rss_kb(proc.pid)
            with open(out) as f:
                n = sum(1 for _ in f)
            if kb:
                samples.append((n, kb))
    after = [s for s in samples if s[0] >= warmup]
    (n0, kb0), (n1, kb1) = after[0], after[-1]
    return {"checkout": str(checkout), "seconds": round(time.monotonic() - t0, 1), "from_frame": n0, "to_frame": n1,
            "rss_mb": [round(kb0 / 1024, 1), round(kb1 / 1024, 1)],
            "bytes_per_frame": round((kb1 - kb0) * 1024 / max(n1 - n0, 1), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkouts", nargs="*", type=Path, default=[ROOT])
    ap.add_argument("--frames", type=int, default=36000)
    ap.add_argument("--warmup", type=int, default=6000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_video(tmp / "long.avi", args.frames)
        subprocess.run([sys.executable, "-m", "edgeembed.cli", "enroll", str(DATA / "coil20" / "obj01"), "--label",
                        "obj01", "--gallery", str(tmp / "g"), "--model",
                        str(ROOT / "models" / "mobilenet_v2_1.0_224_int8.tflite"), "--quiet"], cwd=ROOT, check=True)
        print(f"# {platform.machine()}, {platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        for checkout in args.checkouts:
            print(json.dumps(run(checkout.resolve(), tmp / "g", tmp / "long.avi", tmp / "out.jsonl", args.warmup)),
                  flush=True)


if __name__ == "__main__":
    main()
