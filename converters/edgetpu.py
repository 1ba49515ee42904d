"""Edge TPU: which ops of a .tflite can map to the Coral TPU, and running ``edgetpu_compiler``.

The compiler maps only full-integer ops from its supported list; everything after the first
op that does not map runs on the CPU. We list those ops before compiling so users see why.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from edgeembed.errors import EdgeEmbedError

# Coral's documented supported operations (coral.ai/docs/edgetpu/models-intro, "Supported operations").
SUPPORTED = {
    "ADD", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D", "EXPAND_DIMS", "FULLY_CONNECTED",
    "GATHER", "HARD_SWISH", "L2_NORMALIZATION", "LOGISTIC", "LSTM", "MAX_POOL_2D", "MAXIMUM", "MEAN", "MINIMUM",
    "MUL", "PACK", "PAD", "PRELU", "QUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RELU_N1_TO_1",
    "RESHAPE", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM", "TANH", "TRANSPOSE", "TRANSPOSE_CONV",
}
INSTALL_HINT = ("edgetpu_compiler is not on PATH; it runs on x86-64 Debian/Ubuntu: see "
                "https://coral.ai/docs/edgetpu/compiler/ (apt-get install edgetpu-compiler from Coral's apt repository)")


def op_report(model: bytes) -> dict:
    """Ops in the model, and which will not map (unsupported, or not integer)."""
    from .quantize import _litert

    interp = _litert()(model_content=model)
    ops = interp._get_ops_details()  # noqa: SLF001 - the public API has no op listing
    details = interp.get_tensor_details()
    dtypes = {d["index"]: str(d["dtype"].__name__ if hasattr(d["dtype"], "__name__") else d["dtype"]) for d in details}
    counts: dict[str, int] = {}
    unmapped: dict[str, int] = {}
    for op in ops:
        name = op["op_name"]
        counts[name] = counts.get(name, 0) + 1
        tensors = [int(t) for t in list(op["inputs"]) + list(op["outputs"]) if int(t) >= 0]
        is_float = any(dtypes.get(t, "").startswith("float") for t in tensors)
        if name not in SUPPORTED or (is_float and name not in ("QUANTIZE", "DEQUANTIZE")):
            unmapped[name] = unmapped.get(name, 0) + 1
    return {"ops": counts, "total": len(ops), "will_not_map": unmapped}


class EdgeTpuCompileError(EdgeEmbedError):
    """edgetpu_compiler ran but gave no Edge TPU model (the CPU model written before it stays)."""

    exit_code = 4  # 3 is a model below the fidelity gate


def compile_for_edgetpu(model_path: str | Path, out_dir: str | Path | None = None) -> dict:
    """Run edgetpu_compiler when present: -> {"compiled": path, "mapped": n, "on_cpu": n, "not_mapped": {...}, "log": str}.

    "compiled" is set only to a TFLite file this run wrote; otherwise "error" says what went wrong. A
    ``<stem>_edgetpu.tflite`` (and its .log) left by an earlier run is removed first, so it is never taken for
    this run's (nor given this model's metadata), and a file the compiler wrote that is no TFLite model is removed.
    """
    exe = shutil.which("edgetpu_compiler")
    if not exe:
        return {"compiled": None, "message": INSTALL_HINT}
    model_path = Path(model_path)
    out_dir = Path(out_dir or model_path.parent)
    compiled, log_file = compiled_paths(model_path, out_dir)
    for stale in (compiled, log_file):
        stale.unlink(missing_ok=True)
    proc = subprocess.run([exe, "-s", "-o", str(out_dir), str(model_path)], capture_output=True, text=True)
    text = proc.stdout + proc.stderr
    res: dict = {"compiled": None, "returncode": proc.returncode, **parse_compiler_log(text)}
    said = _last_line(text)
    if proc.returncode != 0:
        res["error"] = f"edgetpu_compiler failed (exit status {proc.returncode}{': ' + said if said else ''})"
    elif not compiled.is_file():
        res["error"] = (f"edgetpu_compiler exited 0 but wrote no {compiled.name}"
                        + (f" (its last line: {said})" if said else ""))
    else:
        from edgeembed.tflite_file import read_tflite

        try:
            read_tflite(compiled.read_bytes(), compiled.name)
        except (EdgeEmbedError, OSError) as exc:
            compiled.unlink(missing_ok=True)
            res["error"] = (f"edgetpu_compiler wrote {compiled.name}, which is not a TFLite model ({exc.__class__.__name__}); "
                            "it was removed: check the compiler's installation (edgetpu_compiler --version)")
    if "error" in res:
        compiled.unlink(missing_ok=True)  # nothing half-written or unusable is left under the compiled name
        return res
    res["compiled"] = str(compiled)
    if "mapped" not in res and "total_ops" in res:  # the compiler prints the split only when some ops stay on the CPU
        res["mapped"], res["on_cpu"] = res["total_ops"], 0
    res["metadata_restored"] = restore_metadata(model_path, compiled)
    return res


def compiled_paths(model_path: str | Path, out_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Where edgetpu_compiler writes the compiled model of ``model_path`` and its log."""
    model_path = Path(model_path)
    out_dir = Path(out_dir or model_path.parent)
    return out_dir / (model_path.stem + "_edgetpu.tflite"), out_dir / (model_path.stem + "_edgetpu.log")


def _last_line(text: str) -> str:
    """The compiler's last line that says something (not its closing boilerplate)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def restore_metadata(source: Path, compiled: Path) -> list[str]:
    """Put the source model's metadata entries back into the compiled file; -> the names restored.

    edgetpu_compiler writes a new flatbuffer without the source's metadata, so the compiled file
    would lose its preprocessing, embedding output and fidelity (and other tools their standard
    metadata). The input and output tensors are the same, so the entries still describe it.
    """
    from edgeembed.spec import METADATA_NAME
    from edgeembed.tflite_file import read_tflite, write_metadata

    from .metadata import STANDARD_NAME, write_atomically

    want = read_tflite(source.read_bytes(), source.name).metadata
    data = compiled.read_bytes()
    have = read_tflite(data, compiled.name).metadata
    missing = {k: want[k] for k in (METADATA_NAME, STANDARD_NAME) if k in want and have.get(k) != want[k]}
    if missing:
        write_atomically(compiled, write_metadata(data, missing, compiled.name))
    return sorted(missing)


def parse_compiler_log(log: str) -> dict:
    """edgetpu_compiler's report -> op counts and the ops it left on the CPU, with its reason for each."""
    res: dict = {"log": log}
    for key, pattern in (("total_ops", r"Total number of operations:\s*(\d+)"),
                         ("mapped", r"Number of operations that will run on Edge TPU:\s*(\d+)"),
                         ("on_cpu", r"Number of operations that will run on CPU:\s*(\d+)")):
        m = re.search(pattern, log)
        if m:
            res[key] = int(m.group(1))
    not_mapped: dict[str, dict] = {}
    table = log.split("Operator", 1)[1] if re.search(r"^Operator\s+Count\s+Status", log, re.M) else ""
    for name, count, status in re.findall(r"^([A-Z][A-Z0-9_]+)\s+(\d+)\s+(\S.*?)\s*$", table, re.M):
        if status != "Mapped to Edge TPU":
            entry = not_mapped.setdefault(name, {"count": 0, "reasons": []})
            entry["count"] += int(count)
            entry["reasons"].append(status)
    if not_mapped:
        res["not_mapped"] = not_mapped
    return res
