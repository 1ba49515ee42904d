"""Frame sources behind one interface: ``open_source(text)`` picks picamera2, a folder/glob, or OpenCV."""
from __future__ import annotations

from ..errors import SourceError
from .base import Frame, FrameSource, StatusCallback, crop_roi, parse_resolution, parse_roi
from .folder import FolderSource, is_folder_spec
from .opencv import OpenCVSource, classify


def check_stream(stream: str, text: str) -> None:
    """Only picamera2 has a second stream: asked of any other source it was silently ignored (the user believed the
    small stream was read)."""
    if stream != "main":
        raise SourceError(f"--stream {stream} is picamera2's second stream; {text} has one: drop --stream")


def open_source(spec: str, *, resolution: tuple[int, int] | None = None, roi: tuple[int, int, int, int] | None = None,
                stream: str = "main", fps: float | None = None, on_status: StatusCallback | None = None,
                reconnect_timeout: float = 60.0) -> FrameSource:
    """The source a user's text names (not yet opened: use ``with``, or iterate it)."""
    text = str(spec).strip()
    if not text:  # '' would be read as the current folder
        raise SourceError("the source is empty; give a video file, a camera index, a URL, a folder or picamera2")
    if text.lower().startswith("picamera2"):
        from .picamera2 import Picamera2Source  # noqa: PLC0415

        return Picamera2Source(text, stream=stream, resolution=resolution, roi=roi, fps=fps, on_status=on_status)
    check_stream(stream, text)
    if is_folder_spec(text):
        return FolderSource(text, resolution=resolution, roi=roi, on_status=on_status)
    return OpenCVSource(text, resolution=resolution, roi=roi, on_status=on_status, reconnect_timeout=reconnect_timeout)


__all__ = ["Frame", "FrameSource", "FolderSource", "OpenCVSource", "StatusCallback", "check_stream", "classify", "crop_roi",
           "open_source", "parse_resolution", "parse_roi"]
