"""stdout outputs: one JSON object per processed frame and per event, or short text lines for people."""
from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

import numpy as np

from ..gallery import shown_label


class JsonLinesSink:
    """``{"frame", "label", "score", ...}`` per frame and ``{"event", "label", "frame", ...}`` per event, each with
    the ``camera`` name and the wall-clock ``time`` it was written (Unix seconds), as MQTT's are: a flow that reads
    several cameras tells them apart, and needs no clock of its own."""

    def __init__(self, stream: IO[str] | None = None, camera: str | None = None):
        self.stream = stream or sys.stdout
        self.camera = camera

    def _write(self, obj: dict) -> None:
        stamp = {"time": round(time.time(), 3)} | ({"camera": self.camera} if self.camera is not None else {})
        self.stream.write(json.dumps({**obj, **stamp}) + "\n")
        self.stream.flush()

    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        self._write(record.to_dict())

    def on_event(self, event: dict) -> None:
        self._write(event)

    def close(self) -> None:
        pass


class TextSink:
    """Events as text lines (appeared/left; an unknown face reads "unknown"); source problems are already on
    stderr."""

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream or sys.stdout

    def on_frame(self, record: Any, rgb: np.ndarray) -> None:
        pass

    def on_event(self, event: dict) -> None:
        if event.get("event") in ("appeared", "left"):
            where = f" (face {event['track']} at {event['box']})" if event.get("box") else ""
            label = shown_label(event["label"]) if event["label"] is not None else "unknown"
            # a label that leaves because the run stopped says so: it was not seen going
            why = {"end": ", at the end of the run", "source_lost": ", the camera was lost",
                   "error": ", the run stopped on an error"}.get(event.get("reason"), "")
            self.stream.write(f"frame {event['frame']}: {event['event']} {label} "
                              f"score {event.get('score', 0):.3f}{where}{why}\n")
            self.stream.flush()

    def close(self) -> None:
        pass
