"""Make a TFLite interpreter: pick the backend, the thread count and the delegate.

Backends, in order of preference: ai_edge_litert (LiteRT, numpy 2, XNNPACK int8),
tflite_runtime (the last release needs numpy < 2; a fallback), tensorflow.lite (the full
TensorFlow, on a workstation). All hardware knowledge (Edge TPU, NNAPI and other delegate
libraries) lives here.
"""
from __future__ import annotations

import contextlib
import gc
import importlib
import importlib.util
import os
import platform
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from .errors import BackendError, ModelError, debugging

BACKENDS = ("ai_edge_litert", "tflite_runtime", "tensorflow")
_MODULES = {
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tflite_runtime": "tflite_runtime.interpreter",
    "tensorflow": "tensorflow.lite",
}
_PIP = {  # what to install for each backend
    "ai_edge_litert": "pip install ai-edge-litert",
    "tflite_runtime": "pip install tflite-runtime 'numpy<2' (its last release, 2.14, needs numpy 1.x)",
    "tensorflow": "pip install tensorflow-cpu",
}
EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}.get(platform.system(), "libedgetpu.so.1")


@dataclass(frozen=True)
class DelegateSpec:
    """``cpu`` (no delegate), ``edgetpu``, or a path to a delegate library with its options."""

    kind: str = "cpu"
    library: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None, options: dict[str, Any] | None = None) -> "DelegateSpec":
        text = (text or "cpu").strip()
        if text.lower() in ("cpu", "none", ""):
            return cls("cpu")
        if text.lower() == "edgetpu" or text.lower().startswith("edgetpu:"):
            opts = dict(options or {})
            if ":" in text:  # edgetpu:usb, edgetpu:pci:0
                opts.setdefault("device", text.split(":", 1)[1])
            return cls("edgetpu", EDGETPU_LIBRARY, opts)
        if os.path.basename(text).startswith("libedgetpu"):  # the Edge TPU library named by file or path
            return cls("edgetpu", text, dict(options or {}))
        if text.lower() == "gpu":
            raise BackendError("--delegate gpu: give the path of the GPU delegate library built for your board "
                               "(e.g. --delegate /path/to/libtensorflowlite_gpu_delegate.so); it has no default library name")
        if text.lower() == "nnapi":
            raise BackendError("--delegate nnapi: give the path of the NNAPI delegate library of your Android build "
                             "(e.g. --delegate /path/to/libnnapi_delegate.so); NNAPI has no default library name")
        return cls("library", text, dict(options or {}))


def available_backends() -> list[str]:
    """Backends whose package is installed (importing them is left to load_backend)."""
    return [n for n in BACKENDS if importlib.util.find_spec(_MODULES[n].split(".")[0]) is not None]


def _tensorflow_lite() -> Any:
    """tf.lite's Interpreter and load_delegate. The importable module ``tensorflow.lite`` lacks them
    (TensorFlow 2.21 attaches them to the ``tf.lite`` API object only), so they are taken from there."""
    import types

    import tensorflow as tf

    return types.SimpleNamespace(Interpreter=tf.lite.Interpreter, load_delegate=tf.lite.experimental.load_delegate)


def _major_minor(version: str) -> tuple[int, int]:
    """(2, 14) from '2.14.0' or '2.14.0rc1'."""
    parts = [int(m) for m in re.findall(r"\d+", version)[:2]]
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def _numpy_mismatch(candidate: str) -> str | None:
    """Why ``candidate`` cannot run under this numpy, or None. tflite_runtime up to 2.14 (its last release) is
    built against numpy 1.x: under numpy 2 it imports, then fails inside Interpreter() with a SystemError."""
    if candidate != "tflite_runtime":
        return None
    import numpy as np

    try:
        from importlib.metadata import version

        tflite_version = version("tflite-runtime")
    except Exception:  # installed without metadata: trust it
        return None
    if _major_minor(np.__version__) >= (2, 0) and _major_minor(tflite_version) <= (2, 14):
        return (f"tflite-runtime {tflite_version} was built for numpy 1.x and this environment has numpy {np.__version__}; "
                "pip install 'numpy<2', or pip install ai-edge-litert")
    return None


def load_backend(name: str = "auto") -> tuple[str, Any]:
    """(backend name, module with Interpreter and load_delegate)."""
    names = BACKENDS if name in ("auto", None) else (name,)
    if name not in ("auto", None) and name not in BACKENDS:
        raise BackendError(f"unknown backend {name!r}; expected one of auto, {', '.join(BACKENDS)}")
    errors = []
    for candidate in names:
        mismatch = _numpy_mismatch(candidate)
        if mismatch:
            errors.append(f"{candidate}: {mismatch}")
            continue
        try:
            # TensorFlow's own absl / oneDNN lines on import are not ours to print
            with _quiet_native_stderr() if candidate == "tensorflow" else contextlib.nullcontext():
                module = _tensorflow_lite() if candidate == "tensorflow" else importlib.import_module(_MODULES[candidate])
        except Exception as exc:  # ImportError, or numpy ABI errors from tflite_runtime under numpy 2
            errors.append(f"{candidate}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
            continue
        return candidate, module
    if name in ("auto", None):
        raise BackendError(
            "no TFLite interpreter found (" + "; ".join(errors) + "); install one with: pip install ai-edge-litert"
        )
    if "numpy" in errors[0] and name == "tflite_runtime":
        raise BackendError(f"backend {errors[0]}")
    raise BackendError(f"backend {name} cannot be imported ({errors[0]}); install it ({_PIP[name]}) "
                       "or choose --backend auto")


@contextlib.contextmanager
def _quiet_unraisable():
    """Keep the libraries' noisy ``Delegate.__del__`` tracebacks off the user's screen.

    A delegate that fails to load leaves a half-built object whose ``__del__`` raises
    AttributeError; Python prints that as 'Exception ignored in ...'. We collect it here.
    """
    old = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        yield
    finally:
        gc.collect()
        sys.unraisablehook = old


@contextlib.contextmanager
def _quiet_native_stderr():
    """Hide the runtime's native INFO lines ("Created TensorFlow Lite XNNPACK delegate") from the terminal.

    Errors still reach the user through the exceptions we turn into one-line messages;
    EDGEEMBED_DEBUG=1 shows everything.
    """
    if debugging():
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pytest capture, notebooks)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    try:
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)
        os.close(devnull)


def load_delegate(module: Any, spec: DelegateSpec):
    """Load the delegate library or raise a one-line BackendError saying how to fix it."""
    if spec.kind == "cpu":
        return None
    options = {str(k): str(v) for k, v in spec.options.items()}
    with _quiet_unraisable():
        try:
            return module.load_delegate(spec.library, options)
        # docs say ValueError; a missing library is OSError; a library that is no delegate, AttributeError
        except (OSError, ValueError, RuntimeError, AttributeError) as exc:
            detail = _one_line(exc)  # the library's own reason is on the lines after 'Failed to load delegate from'
    if "tflite_plugin_create_delegate" in detail:
        raise BackendError(f"{spec.library} is a library but not a TFLite delegate (it has no "
                           "tflite_plugin_create_delegate); give the path of the delegate library itself")
    if spec.kind == "edgetpu":
        raise BackendError(
            f"the Edge TPU delegate ({spec.library}) could not be loaded ({detail}); "
            "plug in the Coral device and install its runtime (apt install libedgetpu1-std), or run with --delegate cpu "
            "and a model not compiled for the Edge TPU"
        )
    raise BackendError(f"the delegate library {spec.library} could not be loaded ({detail}); check the path and its options")


def _one_line(exc: BaseException) -> str:
    """An exception's whole text on one line (libraries put the cause on the lines after the first)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _fixed_input_sizes(interpreter: Any, name: str) -> None:
    """A batch left open (-1) is set to 1; a picture size left open cannot be guessed, so it is refused by name
    (XNNPACK's own failure, 'failed to reshape runtime', says nothing of the cause)."""
    for d in interpreter.get_input_details():
        sig = [int(v) for v in d.get("shape_signature", [])]
        if len(sig) < 2:
            continue
        if any(v < 0 for v in sig[1:]):
            raise ModelError(f"{name} takes inputs of any size (input {d.get('name')!r} shape {sig}, -1 = not fixed); "
                             "export it with a fixed input size, e.g. [1, 224, 224, 3]")
        if sig[0] < 0:
            interpreter.resize_tensor_input(d["index"], [1, *sig[1:]])


def make_interpreter(model_content: bytes, *, backend: str = "auto", num_threads: int | None = None,
                     delegate: DelegateSpec | str | None = None, is_edgetpu_model: bool = False,
                     name: str = "model") -> tuple[Any, str]:
    """Create and allocate an interpreter for ``model_content``; return (interpreter, backend name)."""
    if not isinstance(delegate, DelegateSpec):
        delegate = DelegateSpec.parse(delegate)
    if is_edgetpu_model and delegate.kind != "edgetpu":
        raise ModelError(
            f"{name} is compiled for the Coral Edge TPU (it holds edgetpu-custom-op) and cannot run on the CPU; "
            "run it with --delegate edgetpu on a machine with a Coral device, or use the model from before edgetpu_compiler"
        )
    backend_name, module = load_backend(backend)
    delegates = [d for d in [load_delegate(module, delegate)] if d is not None]
    threads = num_threads if num_threads and num_threads > 0 else (os.cpu_count() or 1)
    kwargs: dict[str, Any] = {"model_content": model_content, "num_threads": threads}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    with _quiet_unraisable(), _quiet_native_stderr():
        try:
            interpreter = module.Interpreter(**kwargs)
            _fixed_input_sizes(interpreter, name)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError, SystemError) as exc:
            detail = _one_line(exc)[:300]
            if "numpy" in detail or isinstance(exc, SystemError):  # a binary built for another numpy
                raise BackendError(f"{backend_name} cannot run here ({detail}); with tflite-runtime: pip install "
                                   "'numpy<2', or pip install ai-edge-litert") from None
            if "edgetpu-custom-op" in detail and delegate.kind == "edgetpu":
                raise BackendError(f"the Edge TPU delegate ({delegate.library}) loaded but did not take {name} ({detail}); "
                                   "the Edge TPU runtime may be older than the edgetpu_compiler that made the model: "
                                   "update libedgetpu1-std, or compile the model with a matching compiler") from None
            if "edgetpu-custom-op" in detail:
                raise ModelError(f"{name} needs the Edge TPU delegate ({detail}); run it with --delegate edgetpu") from None
            if delegates:
                raise BackendError(f"the delegate {delegate.library} could not be applied to {name} by {backend_name} "
                                   f"({detail}); check the delegate's version and options, or run with --delegate cpu "
                                   "to check the model alone") from None
            raise ModelError(f"{name} could not be loaded by {backend_name} ({detail}); check that it is a valid .tflite") from None
    return interpreter, backend_name
