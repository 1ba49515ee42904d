"""Where results go: JSON lines or text on stdout, MQTT, an annotated video file, an MJPEG preview."""
from __future__ import annotations

from .jsonl import JsonLinesSink, TextSink

__all__ = ["JsonLinesSink", "TextSink"]
