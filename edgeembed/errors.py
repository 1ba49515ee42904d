"""One exception family. Every message says what was expected, what came, and how to fix it.

The CLI prints ``str(error)`` as a single line and exits non-zero, so messages are written
for the person at the terminal, not for a stack trace.
"""
from __future__ import annotations

import os


def debugging() -> bool:
    """EDGEEMBED_DEBUG set to anything but empty, 0, false, no or off: tracebacks and the runtime's own log lines
    are shown (EDGEEMBED_DEBUG=0 used to turn them on too)."""
    return os.environ.get("EDGEEMBED_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off")


class EdgeEmbedError(Exception):
    """Base of every error edgeembed raises on purpose."""

    exit_code = 2


class InputError(EdgeEmbedError):
    """A file, image or argument given by the user is missing or unusable."""


class ImageError(InputError):
    """A path that should hold an image does not (missing, not an image, truncated)."""


class ModelError(EdgeEmbedError):
    """A .tflite file is missing, corrupt, or not what the operation needs."""


class BackendError(EdgeEmbedError):
    """No interpreter backend, or a delegate (Edge TPU, NNAPI, ...) that cannot load."""


class GalleryError(EdgeEmbedError):
    """A gallery is missing, corrupt, or bound to another model."""


class SourceError(EdgeEmbedError):
    """A camera, stream, video or folder source cannot be opened or has gone away."""


class SourceUnavailableError(SourceError):
    """A live source that is not there now: a camera not plugged in, a stream not up (yet), one that went away and
    stayed away past the reconnect timeout. It may come back, so it exits 75 (EX_TEMPFAIL), not 2: a service
    manager can start such a run again and leave a mistake (exit 2: a missing gallery, a changed model) alone."""

    exit_code = 75


class MissingExtraError(EdgeEmbedError):
    """An optional dependency is not installed; the message names the pip extra."""


def require(module: str, extra: str, purpose: str = ""):
    """Import an optional dependency or raise an error naming the extra that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        what = f" for {purpose}" if purpose else ""
        raise MissingExtraError(
            f"{module} is needed{what} but is not installed ({exc}); "
            f"install edgeembed's '{extra}' extra: pip install -e '.[{extra}]' in your edgeembed clone"
        ) from exc
