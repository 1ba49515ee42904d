"""Where the models the project ships are found: an environment variable, the repository's models/
folder (editable installs, clones), or sys.prefix/share/edgeembed/models (wheel installs)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import InputError

REPO_MODELS = Path(__file__).resolve().parent.parent / "models"
INSTALLED_MODELS = Path(sys.prefix) / "share" / "edgeembed" / "models"

# Earlier shipped files whose embeddings the current ones reproduce bit for bit: gallery fingerprint ->
# the behaviour value (Embedder.behaviour_fingerprint on LiteRT) they share with today's file. Galleries
# enrolled with them predate the stored behaviour value; this lets such a gallery keep its embeddings.
EARLIER_SHIPPED_BEHAVIOUR = {
    "9740a3f74eabe7dd7fa1": "7fe2cd681af415c25c5c",  # mobilenet_v2_1.0_224_int8.tflite, commit 9de198b (int8 edges)
    "ec4af7cba4fd7d6ef265": "57f508145e89b74e533e",  # efficientnet_lite0_int8.tflite, commit 9de198b (int8 edges)
}


def shipped_model(name: str, env_var: str, what: str = "model") -> Path:
    """The shipped ``name``, unless ``env_var`` names another file (which must exist)."""
    env = os.environ.get(env_var)
    if env:
        if not Path(env).exists():
            raise InputError(f"{env_var} points to {env}, which does not exist; set it to a .tflite {what} "
                             "or unset it to use the shipped one")
        return Path(env)
    found = shipped_copy(name)
    if found is not None:
        return found
    raise InputError(f"the default {what} {name} is not installed (looked in {REPO_MODELS} and {INSTALLED_MODELS}); "
                     f"give a model path (or set {env_var})")


def shipped_copy(name: str) -> Path | None:
    """The shipped file called ``name`` in this install, if any: where a gallery looks for its model once
    the file it was enrolled with has gone (a new venv or clone moves the shipped models)."""
    for folder in (REPO_MODELS, INSTALLED_MODELS):
        if (folder / name).is_file():
            return folder / name
    return None
