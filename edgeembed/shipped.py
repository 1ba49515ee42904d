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
    "007e1be22558023011b0": "7fe2cd681af415c25c5c",  # mobilenet_v2_1.0_224_int8.tflite, commit 516b63a (uint8 edges)
    "3e9f0a903d7bd6d05bf3": "57f508145e89b74e533e",  # efficientnet_lite0_int8.tflite, commit 516b63a (uint8 edges)
    # dlib_face_resnet_v1_int8.tflite, commits 8fc9c94 and cbb1a47: the same network and alignment template as
    # today's file, which adds the recommended threshold to the metadata (4c71a20)
    "3401fe45b0b2999dbd95": "1798d4a047c9935be486",
    "317363fea6b13f38288d": "1798d4a047c9935be486",
}

# Earlier shipped files that embed otherwise than today's (another int8 graph, or the centre crop): gallery
# fingerprint -> (the first commit that shipped the file, its name), so that a gallery enrolled with one is told how
# to get its own model back from git instead of only "put the original model file back".
EARLIER_SHIPPED_FILES = {
    "6d2cdebeea2f55b4c3c9": ("3a5bfcf", "mobilenet_v2_1.0_224_int8.tflite"),
    "8d872fe45447a92b710d": ("f98f424", "mobilenet_v2_1.0_224_int8.tflite"),
    "fa6467067e3d23cab811": ("4a508fa", "mobilenet_v2_1.0_224_int8.tflite"),
    "7476ef38c7a862eaa6ba": ("d97254f", "mobilenet_v2_1.0_224_int8.tflite"),
    "4227e75923c3fa9e0d81": ("cf89b7c", "efficientnet_lite0_int8.tflite"),
    "be219a417833235fa591": ("f98f424", "efficientnet_lite0_int8.tflite"),
    "19f82c468e00bb2b56f2": ("4a508fa", "efficientnet_lite0_int8.tflite"),
    "7696342732f58f5eb909": ("d97254f", "efficientnet_lite0_int8.tflite"),
    "c35153de52e0a0b148e5": ("605fa3c", "dlib_face_resnet_v1_int8.tflite"),
}


def earlier_shipped_fix(fingerprint: str) -> str | None:
    """For a gallery enrolled with an earlier shipped file that today's does not reproduce: how to get that file
    back from git and use it. None for any other model."""
    known = EARLIER_SHIPPED_FILES.get(fingerprint)
    if known is None:
        return None
    commit, name = known
    copy = f"{Path(name).stem}-{commit}.tflite"
    repo = REPO_MODELS.parent
    git = f"git -C {repo}" if (repo / ".git").exists() else "git (in a clone of edgeembed)"
    return (f"it was enrolled with {name} as edgeembed shipped it at commit {commit}, which today's file does not "
            f"reproduce: get that file back with `{git} show {commit}:models/{name} > {copy}` and pass "
            f"--model {copy}, or enroll the pictures into a new gallery")


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
