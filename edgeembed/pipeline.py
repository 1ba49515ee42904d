"""The live pipeline: capture -> preprocess -> embed -> search -> smoothing -> events, with per-stage timings.

Capture runs in its own thread so decoding or waiting for the camera overlaps inference.
A live source is read with a latest-frame policy (the capture thread keeps only the newest
frame, so the pipeline never works through a stale backlog); a recording goes through a
small bounded queue, so every frame is processed, and is preprocessed on the capture thread
too (overlapping inference; a live source is preprocessed on the caller's thread, so no work
is spent on frames it drops). The rest runs on the caller's thread, one frame at a time, and
is written in ``Pipeline.run`` in the order a frame travels.
"""
from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

import numpy as np

from .errors import SourceError
from .smoothing import Result, Track, TrackSmoother
from .sources.base import Frame, FrameSource

STAGES = ("capture", "preprocess", "invoke", "search", "total")
STAGE_WINDOW = 10_000  # frames whose stage times are kept (bench's summary); a run of days keeps no more
CAPTURE_JOIN_S = 15.0  # longest a blocked camera/stream read may take to return (stream read timeout is 5 s)


class Processor(Protocol):
    """What turns one RGB frame into answers: image mode (whole frame) or face mode (one per face)."""

    timings: dict[str, float]  # ms of the last call, by stage (preprocess, invoke, search, ...)

    def process(self, rgb: np.ndarray) -> list[Any]: ...


class Preparing(Protocol):
    """A processor may split off a thread-safe first step; recordings then run it on the capture thread."""

    def prepare(self, rgb: np.ndarray) -> Any: ...
    def process_prepared(self, prepared: Any) -> list[Any]: ...


class ImageProcessor:
    """Image mode: the whole frame (after the ROI) is embedded and searched in the gallery."""

    def __init__(self, embedder: Any, gallery: Any, threshold: float | None = None, top_k: int = 3):
        self.embedder = embedder
        self.gallery = gallery
        self.threshold = threshold
        self.top_k = top_k
        self.timings: dict[str, float] = {}

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """Resize and quantize: pure numpy/OpenCV, safe on another thread than the interpreter's."""
        return self.embedder.preprocessor(rgb)

    def process(self, rgb: np.ndarray) -> list[Result]:
        t0 = time.perf_counter()
        tensor = self.prepare(rgb)
        results = self.process_prepared(tensor)
        self.timings["preprocess"] = (time.perf_counter() - t0) * 1000 - self.timings["invoke"] - self.timings["search"]
        return results

    def process_prepared(self, tensor: np.ndarray) -> list[Result]:
        t1 = time.perf_counter()
        vector = self.embedder.embed_tensor(tensor)[0].vector
        t2 = time.perf_counter()
        results = []
        if self.gallery is not None:
            r = self.gallery.recognize(vector, threshold=self.threshold, k=self.top_k)
            matches = r.to_dict()["matches"]
            results.append(Result(None, r.label, r.score, matches, matches[0]["label"] if matches else None,
                                  r.threshold))
        t3 = time.perf_counter()
        self.timings = {"invoke": (t2 - t1) * 1000, "search": (t3 - t2) * 1000}
        return results


@dataclass
class FrameRecord:
    """Everything known about one processed frame; what every output receives."""

    frame: int
    time: float
    tracks: list[Track]
    timings: dict[str, float]
    face_mode: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def main(self) -> Track | None:
        """The track the frame-level label reports: the whole frame, or the best known face."""
        if not self.tracks:
            return None
        known = [t for t in self.tracks if t.label is not None]
        return max(known or self.tracks, key=lambda t: t.score)

    @property
    def present_faces(self) -> int:
        """Face tracks smoothly in view (known or not): a face missed for one frame still counts."""
        return sum(1 for t in self.tracks if t.box is not None and t.present)

    @property
    def unknown_faces(self) -> int:
        """Of those, the ones no enrolled label holds: someone the gallery does not know is here."""
        return sum(1 for t in self.tracks if t.unknown)

    def to_dict(self) -> dict[str, Any]:
        m = self.main
        out: dict[str, Any] = {"frame": self.frame, "label": m.label if m else None,
                               "score": round(m.score, 6) if m else None}
        if self.face_mode:
            out["faces"] = [t.to_dict() for t in self.tracks if t.seen]
            out.update(present_faces=self.present_faces, unknown_faces=self.unknown_faces)
        elif m is not None:
            d = m.to_dict()
            out.update(smoothed=True, raw_label=d["raw_label"], raw_score=d["raw_score"], matches=d["matches"])
        out.update(self.extra)
        out["time_ms"] = {k: round(v, 3) for k, v in self.timings.items()}
        return out


class Sink(Protocol):
    """An output: JSON lines, MQTT, annotated video, preview."""

    def on_frame(self, record: FrameRecord, rgb: np.ndarray) -> None: ...
    def on_event(self, event: dict) -> None: ...
    def close(self) -> None: ...


@dataclass
class RunStats:
    frames: int = 0
    captured: int = 0
    skipped_stale: int = 0
    events: int = 0
    seconds: float = 0.0
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM
    stage_ms: dict[str, deque[float]] = field(  # the last STAGE_WINDOW frames' times, per stage
        default_factory=lambda: {s: deque(maxlen=STAGE_WINDOW) for s in STAGES})

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


_END = object()


class _Capture(threading.Thread):
    """Reads the source on its own thread. Live: keep only the newest frame. Recording: bounded queue.

    For a recording, ``prepare`` (the processor's preprocessing) runs here too, so it overlaps
    inference; a live source leaves it to the consumer, which never preprocesses a frame it drops.
    """

    def __init__(self, source: FrameSource, prepare: Any = None, fps_cap: float | None = None, depth: int = 4):
        super().__init__(name="edgeembed-capture", daemon=True)
        self.source = source
        self.live = source.live
        self.prepare = None if source.live else prepare
        # a recording with a frame rate is thinned by media time here, before any work is spent on a frame
        self.media_step = 1.0 / fps_cap if fps_cap and not source.live and source.native_fps else None
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._latest: Any = None
        self._cond = threading.Condition()
        self._halt = threading.Event()
        self.captured = 0
        self.overwritten = 0

    def run(self) -> None:
        next_time = None
        try:
            while not self._halt.is_set():
                f = self.source.read()
                if f is None:
                    break
                self.captured += 1
                if self.media_step:
                    if next_time is not None and f.time + 1e-9 < next_time:
                        continue
                    next_time = (next_time if next_time is not None else f.time) + self.media_step
                if self.prepare is not None:
                    t0 = time.perf_counter()
                    f.prepared = self.prepare(f.rgb)
                    f.prepare_ms = (time.perf_counter() - t0) * 1000
                self._put(f)
            self._put(_END)
        except BaseException as exc:  # handed to the consumer, which raises it on its own thread
            self._put(exc)

    def _put(self, item: Any) -> None:
        if self.live:
            with self._cond:
                if isinstance(self._latest, Frame) and isinstance(item, Frame):
                    self.overwritten += 1
                if not (self._latest is _END or isinstance(self._latest, BaseException)):
                    self._latest = item
                self._cond.notify_all()
            return
        while not self._halt.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def get(self, idle: Any = None) -> Frame | None:
        """The next frame to process; None at the end. Re-raises the capture thread's error.

        ``idle`` is called every half second while a live source gives nothing (a camera reconnecting),
        so what happens meanwhile goes out as it happens, not when the frames come back."""
        if self.live:
            while True:
                with self._cond:
                    if self._latest is None:
                        if self._halt.is_set():
                            return None
                        self._cond.wait(0.5)
                    if self._latest is not None:
                        item, self._latest = self._latest, (None if isinstance(self._latest, Frame) else self._latest)
                        break
                if idle is not None:
                    idle()
        else:
            item = self._q.get()
        if item is _END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def stop(self) -> None:
        self._halt.set()
        interrupt = getattr(self.source, "interrupt", None)
        if interrupt:
            interrupt()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._q.get_nowait()
            except queue.Empty:
                break


class Pipeline:
    """Runs a source through a processor and the smoother, handing every frame and event to the outputs."""

    def __init__(self, source: FrameSource, processor: Processor, smoother: TrackSmoother, sinks: Sequence[Sink] = (),
                 fps_cap: float | None = None, max_frames: int | None = None, face_mode: bool = False,
                 status_events: "queue.Queue[dict] | None" = None):
        self.source = source
        self.processor = processor
        self.smoother = smoother
        self.sinks = list(sinks)
        self.fps_cap = fps_cap
        self.max_frames = max_frames
        self.face_mode = face_mode
        self.status_events = status_events or queue.Queue()
        self._status_frame = -1  # the highest frame a status event named
        self._failed_sinks: set[int] = set()  # outputs that raised: they get nothing more this run
        self.stats = RunStats()
        self._stop = threading.Event()
        self._capture: _Capture | None = None

    def stop(self) -> None:
        """Ask run() to return after the current frame (from another thread or a signal handler)."""
        self._stop.set()
        if self._capture is not None:
            self._capture.stop()

    def run(self) -> RunStats:
        prepare = getattr(self.processor, "prepare", None) if hasattr(self.processor, "process_prepared") else None
        capture = self._capture = _Capture(self.source, prepare, self.fps_cap)
        capture.start()
        start = time.perf_counter()
        next_slot = None
        last = -1
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and self.stats.frames >= self.max_frames:
                    break
                # 1. capture: the newest frame of a live source, the next frame of a recording
                frame = capture.get(idle=self._emit_status)
                self._emit_status()
                if frame is None:
                    break
                # 2. fps cap: a live source waits for its slot and takes the newest frame then
                #    (a recording was already thinned by media time on the capture thread)
                if self.fps_cap and capture.media_step is None:
                    if next_slot is not None and time.monotonic() < next_slot:
                        time.sleep(next_slot - time.monotonic())
                        frame = capture.get() or frame
                    next_slot = time.monotonic() + 1.0 / self.fps_cap
                t0 = time.perf_counter()
                # 3. preprocess (done on the capture thread for recordings), embed, search; the processor
                #    times its own stages
                if frame.prepared is not None:
                    results = self.processor.process_prepared(frame.prepared)
                    stage = {"preprocess": frame.prepare_ms, **getattr(self.processor, "timings", {})}
                else:
                    results = self.processor.process(frame.rgb)
                    stage = dict(getattr(self.processor, "timings", {}))
                # 4. smoothing and debounced events
                tracks, events = self.smoother.update(frame.index, results)
                timings = {"capture": frame.capture_ms, **stage,
                           "total": frame.capture_ms + frame.prepare_ms + (time.perf_counter() - t0) * 1000}
                extra = {"source": frame.origin} if frame.origin else {}
                record = FrameRecord(frame.index, frame.time, tracks, timings, self.face_mode, extra)
                # 5. outputs
                self._to_sinks("on_frame", record, frame.rgb)
                for e in events:
                    self._event(e)
                self._account(timings)
                last = frame.index
        finally:
            capture.stop()
            # the source is released after run() returns: the capture thread must be out of read() by then
            capture.join(timeout=CAPTURE_JOIN_S)
            self.stats.seconds = time.perf_counter() - start
            self.stats.captured = capture.captured
            self.stats.skipped_stale = capture.overwritten
            failure = sys.exc_info()[1]  # a source that gave up: its labels left because it was lost, not ended
            # Ctrl-C, SIGTERM (systemd stop), --max-frames, an output that failed (stdout closed): the run ended; any
            # other exception (a delegate that failed mid-run) is an error, which automations may want to tell apart
            reason = ("source_lost" if isinstance(failure, SourceError) else
                      "end" if failure is None or isinstance(failure, (KeyboardInterrupt, SystemExit))
                      or self._failed_sinks else "error")
            pending = None  # an output's failure here must not keep the others from the end-of-run events
            try:
                self._emit_status()
            except Exception as exc:
                pending = exc
            # never a frame number below one already sent (a status event can name a frame read but not processed)
            for e in self.smoother.finish(max(last, self._status_frame), reason):
                try:
                    self._event(e)
                except Exception as exc:
                    pending = pending or exc
            if pending is not None and failure is None:
                raise pending
        return self.stats

    def _account(self, timings: dict[str, float]) -> None:
        self.stats.frames += 1
        for k, v in timings.items():
            self.stats.stage_ms.setdefault(k, deque(maxlen=STAGE_WINDOW)).append(v)

    def _event(self, e: dict) -> None:
        self.stats.events += 1
        self._to_sinks("on_event", e)

    def _to_sinks(self, method: str, *args: Any) -> None:
        """Call every output; one that fails (stdout closed by `| head`, a full disk) gets nothing more, the
        others still get everything, the end-of-run events included; the first failure is raised after them."""
        failed = None
        for sink in self.sinks:
            if id(sink) in self._failed_sinks:
                continue
            try:
                getattr(sink, method)(*args)
            except Exception as exc:
                self._failed_sinks.add(id(sink))
                failed = failed or exc
        if failed is not None:
            raise failed

    def _emit_status(self) -> None:
        failed = None  # an output failing on one status event: the others still get the rest of the queue
        while True:
            try:
                e = self.status_events.get_nowait()
            except queue.Empty:
                break
            self._status_frame = max(self._status_frame, e.get("frame") or 0)
            try:
                self._event(e)
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed


def stage_summary(stats: RunStats) -> dict[str, dict[str, float]]:
    """Mean, median and 95th percentile of each stage, in ms."""
    out = {}
    for k, v in stats.stage_ms.items():
        if v:
            a = np.asarray(v)
            out[k] = {"mean": round(float(a.mean()), 3), "p50": round(float(np.median(a)), 3),
                      "p95": round(float(np.percentile(a, 95)), 3)}
    return out


__all__ = ["FrameRecord", "ImageProcessor", "Pipeline", "Processor", "RunStats", "Sink", "STAGES",
           "stage_summary"]
