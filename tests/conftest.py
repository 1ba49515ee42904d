"""Shared fixtures: the real models and images in ../shared (EDGEEMBED_SHARED overrides)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EDGEEMBED_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
DATA = SHARED / "data"
V1_EMBED = MODELS / "mobilenet_v1_1.0_224_quant_embedding_extractor.tflite"
V1_TINY = MODELS / "mobilenet_v1_0.25_128_quant.tflite"

if not (MODELS / V1_EMBED.name).exists():  # fail loudly: the suite is meaningless without real data
    raise RuntimeError(f"the test data is missing: expected {SHARED} (set EDGEEMBED_SHARED to its path)")


def run_cli(*args: str, check: bool = False, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real `edgeembed` command in a subprocess, as a user would."""
    proc = subprocess.run([sys.executable, "-m", "edgeembed.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"edgeembed {' '.join(map(str, args))} failed ({proc.returncode}): {proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def v1_embedder():
    from edgeembed import Embedder

    with Embedder.create_from_model_path(V1_EMBED, num_threads=2) as emb:
        yield emb
