"""``edgeembed recognize`` on videos, cameras and streams, and ``edgeembed bench --source``.

Builds the pieces from the command-line options (source, processor, smoother, outputs),
runs the pipeline, and always releases the camera and says "offline" on MQTT, whatever
ended the run (end of file, --max-frames, Ctrl-C, SIGTERM, a source that gave up).
"""
from __future__ import annotations

import argparse
import json
import os
import queue
import signal
import sys
import threading
from typing import Any

from .errors import InputError, SourceError
from .progress import Progress
from .pipeline import ImageProcessor, Pipeline, RunStats, stage_summary
from .smoothing import TrackSmoother
from .sources import FolderSource, open_source, parse_resolution, parse_roi

# options that mean something only with --mqtt
_MQTT_ONLY = (("mqtt_user", "--mqtt-user"), ("mqtt_password_file", "--mqtt-password-file"), ("mqtt_tls", "--mqtt-tls"),
              ("mqtt_ca", "--mqtt-ca"), ("mqtt_cert", "--mqtt-cert"), ("mqtt_key", "--mqtt-key"))
DEFAULT_RECONNECT_TIMEOUT = 60.0  # seconds a dropped live source is retried; EDGEEMBED_RECONNECT_TIMEOUT overrides


def limit_opencv_threads() -> None:
    """One OpenCV thread: the pipeline already decodes on its own thread beside inference, and OpenCV's
    worker pool (resize, colour conversion) would only take cores from the interpreter's threads."""
    import cv2

    cv2.setNumThreads(1)


def leave_a_core_for_capture(args: argparse.Namespace) -> None:
    """Default interpreter threads for a live pipeline: all cores but one, which decodes frames.

    With every core inferring, decoding steals from ``invoke``: on 2 cores at 640x480, end-to-end
    throughput was 0.74 of invoke-only with 2 interpreter threads and 0.96 with 1
    (benchmarks/RESULTS.md, "Live pipeline"). ``--threads`` overrides.
    """
    if getattr(args, "threads", None) is None:
        args.threads = max(1, (os.cpu_count() or 2) - 1)


def _reconnect_timeout() -> float:
    text = os.environ.get("EDGEEMBED_RECONNECT_TIMEOUT")
    if not text:
        return DEFAULT_RECONNECT_TIMEOUT
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0:  # negative or nan; 0 gives up at the first drop, inf never does
        raise InputError(f"EDGEEMBED_RECONNECT_TIMEOUT must be seconds >= 0 (0: give up at the first drop, inf: keep "
                         f"trying), got {text!r}")
    return value


def _open_source(args: argparse.Namespace, status: "queue.Queue[dict]"):
    holder: dict[str, Any] = {}

    def on_status(kind: str, message: str, details: dict) -> None:
        print(f"edgeembed: {message}", file=sys.stderr, flush=True)
        src = holder.get("source")
        # the last frame the source gave (its count is the next one's number)
        status.put({"event": kind, "label": None, "frame": max(src._count - 1, 0) if src else 0, "message": message,
                    **details})

    if args.fps is not None and args.fps <= 0:
        raise InputError(f"--fps must be > 0, got {args.fps}")
    source = open_source(args.source, resolution=parse_resolution(args.resolution), roi=parse_roi(args.roi),
                         stream=args.stream, fps=args.fps, on_status=on_status,
                         reconnect_timeout=_reconnect_timeout())
    holder["source"] = source
    return source


def _sinks(args: argparse.Namespace, source: Any) -> list[Any]:
    from .outputs import JsonLinesSink, TextSink

    sinks: list[Any] = [JsonLinesSink(camera=args.camera_name) if args.json else TextSink()]
    try:
        login = [flag for attr, flag in _MQTT_ONLY if getattr(args, attr, None) is not None]
        if login and not args.mqtt:
            raise InputError(f"{', '.join(login)} {'is' if len(login) == 1 else 'are'} for the MQTT output: add "
                             "--mqtt HOST[:PORT], or drop " + ("it" if len(login) == 1 else "them"))
        if args.mqtt:
            from .outputs.mqtt import MqttSink, read_password  # noqa: PLC0415 - optional extra

            sinks.append(MqttSink(args.mqtt, prefix=args.mqtt_topic, camera=args.camera_name,
                                  username=getattr(args, "mqtt_user", None),
                                  password=read_password(getattr(args, "mqtt_password_file", None)),
                                  tls=bool(getattr(args, "mqtt_tls", None)), ca_file=getattr(args, "mqtt_ca", None),
                                  cert_file=getattr(args, "mqtt_cert", None), key_file=getattr(args, "mqtt_key", None)))
        if not args.output and (getattr(args, "output_segment", None) is not None or getattr(args, "output_keep", None)):
            raise InputError("--output-segment and --output-keep need --output FILE (the name the segments are made from)")
        if args.output:
            from .outputs.video import AnnotatedVideoSink  # noqa: PLC0415

            segment = getattr(args, "output_segment", None)
            sinks.append(AnnotatedVideoSink(args.output, fps=args.fps or source.native_fps, live=source.live,
                                            source=args.source, segment_s=segment * 60 if segment is not None else None,
                                            keep=getattr(args, "output_keep", None)))
            if source.live and args.max_frames is None and args.output.lower().endswith((".mp4", ".m4v", ".mov")):
                print(f"edgeembed: note: {args.output} is readable only if the run ends normally (its index is written "
                      "last); a .mkv name (the same size) keeps what was written through a kill or a power cut",
                      file=sys.stderr, flush=True)
        if args.preview is not None:
            from .outputs.preview import PreviewServer  # noqa: PLC0415

            p = PreviewServer(args.preview, args.preview_host, title=f"edgeembed {args.camera_name}")
            print(f"edgeembed: preview at {p.url}", file=sys.stderr, flush=True)
            sinks.append(p)
    except BaseException:
        _close_all(sinks)
        raise
    return sinks


def _close_all(items: list[Any]) -> None:
    for s in items:
        try:
            s.close()
        except Exception as exc:  # one failing output must not keep the others open
            print(f"edgeembed: closing {type(s).__name__} failed: {exc}", file=sys.stderr)


class _Terminate:
    """SIGTERM (systemd stop) and SIGHUP (the terminal closed, or a HUP sent to reload) end the run like Ctrl-C:
    the labels in view leave, outputs are closed, MQTT says offline (SIGHUP killed at once, the retained state
    naming a label no longer in view)."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self) -> "_Terminate":
        self.old: dict = {}
        if threading.current_thread() is threading.main_thread():
            # a signal the run was started to ignore stays ignored: `nohup edgeembed recognize ...` over ssh must
            # outlive the logout's SIGHUP
            self.old = {sig: signal.signal(sig, self._raise) for sig in self.SIGNALS
                        if signal.getsignal(sig) is not signal.SIG_IGN}
        return self

    @staticmethod
    def _raise(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.old.items():
            signal.signal(sig, old)


class _ProgressSink:
    """A pipeline output that only moves a progress bar (``bench``: it prints its figures at the end)."""

    def __init__(self, total: int, desc: str):
        self.bar = Progress(total, desc)

    def on_frame(self, record: Any, rgb: Any) -> None:
        self.bar.update()

    def on_event(self, event: dict) -> None:
        pass

    def close(self) -> None:
        self.bar.close()


def _run(pipeline: Pipeline) -> RunStats:
    try:
        return pipeline.run()
    except KeyboardInterrupt:  # the normal way to stop a camera
        pipeline.stats.interrupted = True
        return pipeline.stats


def recognize_live(args: argparse.Namespace, gallery: Any, processor: Any = None) -> int:
    """Recognize a video, camera or stream against ``gallery``; ``processor`` plugs in face mode."""
    from .cli import _runtime_kwargs
    from .recognizer import open_gallery_embedder

    if args.smooth < 1:
        raise InputError(f"--smooth must be >= 1 frame, got {args.smooth}")
    face_mode = processor is not None and getattr(processor, "face_mode", True)
    limit_opencv_threads()
    leave_a_core_for_capture(args)
    owned: list[Any] = [gallery]
    status: queue.Queue[dict] = queue.Queue()
    try:
        if processor is None:
            emb = open_gallery_embedder(gallery, args.model, **_runtime_kwargs(args))
            owned.append(emb)
            processor = ImageProcessor(emb, gallery, threshold=args.threshold, top_k=args.top_k)
        source = _open_source(args, status)
        with source, _Terminate():
            sinks = _sinks(args, source)
            try:
                pipeline = Pipeline(source, processor, TrackSmoother(args.smooth), sinks, fps_cap=args.fps,
                                    max_frames=args.max_frames, face_mode=face_mode, status_events=status)
                stats = _run(pipeline)
            finally:
                _close_all(sinks)
    finally:
        _close_all(owned)
    if stats.frames == 0 and not source.live and not stats.interrupted:
        raise SourceError(f"{args.source} holds no frame that could be decoded; check the file (e.g. play it with ffplay)")
    if not args.json:
        print(f"edgeembed: {stats.frames} frames in {stats.seconds:.1f} s ({stats.fps:.1f} fps), "
              f"{stats.events} events", file=sys.stderr)
    return 0


def bench_source(args: argparse.Namespace) -> int:
    """Per-stage latency and end-to-end frames per second of the whole pipeline on a source."""
    from .cli import _runtime_kwargs, default_model
    from .embedder import Embedder
    from .gallery import Gallery
    from .recognizer import open_gallery_embedder

    if args.frames < 1:
        raise InputError(f"--frames must be >= 1, got {args.frames}")
    owned: list[Any] = []
    status: queue.Queue[dict] = queue.Queue()
    limit_opencv_threads()
    leave_a_core_for_capture(args)
    try:
        gallery = None
        if args.gallery:
            gallery = Gallery.open(args.gallery)
            owned.append(gallery)
        if gallery is not None and gallery.binding.mode == "face":  # faces: detect, align, embed each one
            from .face.cli import open_face_recognizer  # noqa: PLC0415

            face_args = argparse.Namespace(**{**vars(args), "detector": None, "min_face": None, "face_score": None,
                                              "threshold": None, "top_k": 1})
            processor: Any = open_face_recognizer(face_args, gallery)
            processor.pipeline.detector.multiscale = False  # as recognize runs a live source
            owned.append(processor.pipeline)
            emb = processor.pipeline.embedder.embedder
        else:
            if gallery is not None:
                emb = open_gallery_embedder(gallery, args.model, **_runtime_kwargs(args))
            else:
                emb = Embedder.create_from_model_path(args.model or default_model(), **_runtime_kwargs(args))
            owned.append(emb)
            processor = ImageProcessor(emb, gallery, top_k=1)
        source = _open_source(args, status)
        if isinstance(source, FolderSource) and isinstance(processor, ImageProcessor) and not (args.resolution or args.roi):
            source.keep_side = emb.preprocessor.keep_side  # pictures read as `recognize` reads them (large JPEGs reduced)
        with source, _Terminate():
            limit = min(args.frames, args.max_frames) if args.max_frames else args.frames
            bar = _ProgressSink(limit, "bench")
            pipeline = Pipeline(source, processor, TrackSmoother(args.smooth), [bar], fps_cap=args.fps, max_frames=limit,
                                status_events=status)
            try:
                stats = _run(pipeline)
            finally:
                bar.close()
    finally:
        _close_all(owned)
    summary = stage_summary(stats)
    result = {"source": args.source, "model": emb.model_path, "backend": emb.backend, "threads": args.threads,
              "frames": stats.frames, "seconds": round(stats.seconds, 3), "fps": round(stats.fps, 2),
              "stale_frames_skipped": stats.skipped_stale, "search": gallery is not None,
              "mode": gallery.binding.mode if gallery is not None else "image", "stages_ms": summary}
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{args.source}: {stats.frames} frames in {stats.seconds:.2f} s = {stats.fps:.1f} fps end to end "
          f"({emb.backend}, {os.path.basename(emb.model_path)})")
    print(f"{'stage':<11}{'mean ms':>9}{'p50 ms':>9}{'p95 ms':>9}")
    for stage in ("capture", "detect", "preprocess", "invoke", "search", "total"):
        if stage in summary:
            s = summary[stage]
            print(f"{stage:<11}{s['mean']:>9.2f}{s['p50']:>9.2f}{s['p95']:>9.2f}")
    if gallery is None:
        print("(no --gallery: search skipped)")
    return 0
