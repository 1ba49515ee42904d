"""edgeembed: offline image and face recognition on small devices, on LiteRT.

Explicit re-exports only; importing this package loads numpy and OpenCV, never TensorFlow,
torch or picamera2 (those are optional extras, imported where used).
"""
from .embedder import Embedder, EmbedderOptions, Embedding, cosine_similarity
from .errors import (BackendError, EdgeEmbedError, GalleryError, ImageError, InputError, MissingExtraError,
                     ModelError, SourceError)
from .preprocess import Preprocessor, read_image, to_rgb
from .spec import ModelSpec, Preprocessing

__version__ = "0.1.0"

__all__ = [
    "BackendError", "EdgeEmbedError", "Embedder", "EmbedderOptions", "Embedding", "GalleryError", "ImageError",
    "InputError", "MissingExtraError", "ModelError", "ModelSpec", "Preprocessing", "Preprocessor", "SourceError",
    "__version__", "cosine_similarity", "read_image", "to_rgb",
]
