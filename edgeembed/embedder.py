"""Embedder: a .tflite model that turns pictures into L2-normalised vectors.

Shaped like MediaPipe's ImageEmbedder: an options dataclass, ``Embedder.create_from_options``,
one verb (``embed``), ``close()`` and ``with``. int8/uint8 outputs are dequantized in one place
(``_read_output``).
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from .backends import DelegateSpec, make_interpreter
from .errors import InputError, ModelError
from .preprocess import ImageLike, InputFormat, Preprocessor
from .spec import METADATA_FIX, ModelSpec, fingerprint_of, spec_from_metadata
from .tflite_file import read_tflite


@dataclass
class EmbedderOptions:
    """How to open and run an embedding model. Preprocessing fields override the model's metadata."""

    model_path: str | os.PathLike
    backend: str = "auto"
    num_threads: int | None = None
    delegate: str | None = "cpu"
    delegate_options: dict[str, Any] = field(default_factory=dict)
    output: int | str | None = None  # embedding output tensor (name or index); None = spec, else first
    l2_normalize: bool = True
    quantize: bool = False  # also give an int8 copy of each embedding
    mean: Sequence[float] | float | None = None
    std: Sequence[float] | float | None = None
    color_order: str | None = None
    resize: str | None = None
    crop_fraction: float | None = None
    interpolation: str | None = None

    def preprocessing_overrides(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "color_order": self.color_order,
                "resize": self.resize, "crop_fraction": self.crop_fraction,
                "interpolation": self.interpolation}


@dataclass
class Embedding:
    """One embedding: float32 (L2-normalised unless asked otherwise), and int8 on request."""

    vector: np.ndarray
    quantized: np.ndarray | None = None
    model: str | None = None  # the fingerprint of the model that made it: a gallery refuses another model's
    kind: str | None = None  # "image": of a whole picture (embed), which a face gallery refuses; None: an input tensor

    def __len__(self) -> int:
        return int(self.vector.shape[-1])

    def tolist(self) -> list[float]:
        return self.vector.astype(float).tolist()


def cosine_similarity(a: Embedding | np.ndarray, b: Embedding | np.ndarray) -> float:
    """Cosine similarity of two embeddings (any norm)."""
    va = a.vector if isinstance(a, Embedding) else np.asarray(a, np.float32)
    vb = b.vector if isinstance(b, Embedding) else np.asarray(b, np.float32)
    if va.shape != vb.shape:
        raise InputError(f"embeddings must have the same shape, got {va.shape} and {vb.shape}")
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0 or nb == 0:
        return 0.0
    return float(np.dot(va.ravel(), vb.ravel()) / (na * nb))


def quantize_embedding(v: np.ndarray) -> np.ndarray:
    """A float vector -> int8 scaled so its largest component is +-127 (cosine is scale-free).

    A fixed 1/127 scale (MediaPipe's) wastes most of int8's range on 1024-d unit vectors,
    whose components are ~0.03; scaling by the maximum keeps cosine to the float vector > 0.999.
    """
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top == 0:
        return np.zeros(v.shape, np.int8)
    return np.clip(np.rint(v * (127.0 / top)), -127, 127).astype(np.int8)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


class Embedder:
    """Runs one .tflite embedding model.

    Safe to share between threads: calls take turns on the one interpreter (a LiteRT interpreter used
    by two threads at once mixes their tensors). For throughput on several cores, give each thread
    its own Embedder, or one Embedder more ``num_threads``."""

    def __init__(self, options: EmbedderOptions, interpreter: Any, backend: str, spec: ModelSpec,
                 model_bytes: bytes, fingerprint: str):
        self.options = options
        self.interpreter = interpreter
        self.backend = backend
        self.spec = spec
        self.fingerprint = fingerprint
        self.model_path = str(options.model_path)
        self.model_size = len(model_bytes)
        inp = interpreter.get_input_details()
        if len(inp) != 1 or len(inp[0]["shape"]) != 4 or inp[0]["shape"][3] != 3:
            shapes = [tuple(int(v) for v in d["shape"]) for d in inp]
            fix = ("; a channels-first (1, 3, H, W) model, as PyTorch exports, needs converting to channels-last"
                   if len(inp) == 1 and len(shapes[0]) == 4 and shapes[0][1] == 3 else
                   "; a grey (1, H, W, 1) model needs a 3-channel input in front (e.g. their mean), re-exported"
                   if len(inp) == 1 and len(shapes[0]) == 4 and shapes[0][3] == 1 else "")
            raise ModelError(f"{self.model_path} must take one image input of shape (1, H, W, 3), got {shapes}{fix}")
        self._input = inp[0]
        scale, zp = inp[0]["quantization"]
        self.input_format = InputFormat(int(inp[0]["shape"][1]), int(inp[0]["shape"][2]), np.dtype(inp[0]["dtype"]),
                                        float(scale), int(zp))
        self.preprocessor = Preprocessor(spec.preprocessing, self.input_format)
        self._output = self._select_output(options.output if options.output is not None else spec.embedding_output)
        shape = tuple(int(v) for v in self._output["shape"])
        if sum(d > 1 for d in shape[1:]) > 1:  # e.g. a detector's (1, 896, 16) boxes: no vector to compare
            raise ModelError(f"{self.model_path}: output {self._output['name']!r} has shape {shape}, not an embedding "
                             "vector (expected (1, D)); give --output with the model's embedding output, or an "
                             "embedding model")
        scale, zp = self._output["quantization"]
        self._out_scale, self._out_zp = float(scale), int(zp)
        self.dim = int(np.prod(self._output["shape"][1:]))
        if options.output is None and spec.embedding_dim is not None and spec.embedding_dim != self.dim:
            raise ModelError(f"{self.model_path} has unusable edgeembed metadata: it says embedding_dim "
                             f"{spec.embedding_dim}, but output {self._output['name']!r} gives {self.dim} numbers; "
                             f"{METADATA_FIX}")
        self._behaviour: str | None = None
        self._probes: np.ndarray | None = None
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create_from_options(cls, options: EmbedderOptions) -> "Embedder":
        _check_options(options)
        path = Path(options.model_path)
        if not path.exists():
            raise ModelError(f"model not found: {path} (check the path)")
        if path.is_dir():
            raise ModelError(f"{path} is a folder, expected a .tflite model file")
        data = path.read_bytes()
        info = read_tflite(data, str(path))
        interpreter, backend = make_interpreter(
            data, backend=options.backend, num_threads=options.num_threads,
            delegate=DelegateSpec.parse(options.delegate, options.delegate_options),
            is_edgetpu_model=info.is_edgetpu, name=str(path))
        inp = interpreter.get_input_details()[0]
        spec = spec_from_metadata(info.metadata, np.dtype(inp["dtype"]).name, inp["quantization"], str(path))
        spec = spec.with_overrides(**options.preprocessing_overrides())
        return cls(options, interpreter, backend, spec, data, model_fingerprint(data, spec))

    @classmethod
    def create_from_model_path(cls, model_path: str | os.PathLike, **kwargs: Any) -> "Embedder":
        return cls.create_from_options(EmbedderOptions(model_path=model_path, **kwargs))

    def _select_output(self, which: int | str | None) -> dict:
        outs = self.interpreter.get_output_details()
        if which is None:
            return outs[0]
        if isinstance(which, str) and which.lstrip("-").isdigit():
            which = int(which)
        if isinstance(which, int):
            if not -len(outs) <= which < len(outs):
                raise ModelError(f"{self.model_path} has {len(outs)} output{'s' if len(outs) != 1 else ''}, output index {which} does not "
                                 f"exist (0..{len(outs) - 1})")
            return outs[which]
        for d in outs:
            if d["name"] == which:
                return d
        aliases = self._output_aliases()
        if which in aliases:  # the names the standard metadata gives the outputs
            return self._select_output(aliases[which])
        names = ", ".join([d["name"] for d in outs] + list(aliases))
        raise ModelError(f"{self.model_path} has no output named {which!r}; its outputs are: {names}")

    def _output_aliases(self) -> dict[str, int | str]:
        """'embedding' and 'logits' for models converted here (the names their standard metadata gives)."""
        out: dict[str, int | str] = {}
        if self.spec.source == "edgeembed-metadata":
            out["embedding"] = self.spec.embedding_output if self.spec.embedding_output is not None else 0
        classifier = (self.spec.extra or {}).get("classifier_output")
        if classifier is not None:
            out["logits"] = classifier
        return out

    # ------------------------------------------------------------------ the verb
    def embed(self, image: ImageLike, color: str = "RGB") -> Embedding:
        """One picture (a path, an array in ``color`` order, or an encoded picture's bytes) -> its Embedding."""
        if isinstance(image, np.ndarray) and image.ndim == 4:
            raise InputError(f"embed takes one picture, got a batch of shape {image.shape}; use embed_many")
        if not isinstance(image, (str, os.PathLike, np.ndarray, bytes, bytearray, memoryview)):
            raise InputError(f"embed takes one picture: a path, an (H, W[, C]) array or an encoded picture's bytes, "
                             f"got {type(image).__name__}")
        embedding = self.embed_tensor(self.preprocessor(image, color))[0]
        embedding.kind = "image"
        return embedding

    def embed_many(self, images: Iterable[ImageLike], color: str = "RGB") -> list[Embedding]:
        """Several pictures (a list of paths or arrays, or an (N, H, W, C) array) -> their Embeddings, in order."""
        if isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)):
            raise InputError(f"embed_many takes a list of pictures, got one {'path' if isinstance(images, (str, os.PathLike)) else 'encoded picture'}"
                             f"{f' {str(images)!r}' if isinstance(images, (str, os.PathLike)) else ''}; use embed")
        if isinstance(images, np.ndarray) and (images.ndim < 3 or (images.ndim == 3 and images.shape[2] <= 4)):
            # iterating one picture would embed each of its rows as a picture of its own
            raise InputError(f"embed_many takes several pictures (a list, or an (N, H, W[, C]) array), got one picture "
                             f"of shape {images.shape}; use embed, or embed_many([picture])")
        try:
            pictures = list(images)
        except TypeError:
            raise InputError(f"embed_many takes a list of pictures, got {type(images).__name__}") from None
        out = []
        for i, im in enumerate(pictures):
            try:
                out.append(self.embed(im, color))
            except InputError as exc:  # which of them, when the list is long
                if len(pictures) == 1:
                    raise
                raise type(exc)(f"picture {i} of {len(pictures)}: {exc}") from None
        return out

    def embed_tensor(self, batch: np.ndarray) -> list[Embedding]:
        """Already-preprocessed input (N, H, W, 3) -> Embeddings; the hot path, one invoke each."""
        out = []
        with self._lock:
            self._check_open()
            for row in batch:
                self.interpreter.set_tensor(self._input["index"], row[None])
                self.interpreter.invoke()
                out.append(self._read_output())
        return out

    def looks_like_class_probabilities(self) -> bool:
        """Whether the embedding output is a classifier's softmax, which recognizes poorly (the coral MobileNetV2
        classifier: recall@1 0.69 on COIL-20, its embedding-extractor export 1.00). A quantized softmax has the
        output scale TFLite fixes for it (1/256; zero point 0 for uint8, -128 for int8); a float one is
        non-negative and sums to 1 (one invoke on a probe picture)."""
        if self.dim < 10:
            return False
        if self._out_scale:
            return abs(self._out_scale - 1 / 256) < 1e-9 and self._out_zp in (0, -128)
        batch = self.preprocessor(probe_pictures()[1], "RGB")
        with self._lock:
            self._check_open()
            self.interpreter.set_tensor(self._input["index"], batch[:1])
            self.interpreter.invoke()
            vec = self.interpreter.get_tensor(self._output["index"]).reshape(-1).astype(np.float64)
        return bool(vec.min() >= 0 and abs(vec.sum() - 1.0) < 1e-3)

    def raw_output(self) -> np.ndarray:
        """The embedding output tensor of the last invoke, as the model gave it (int8/uint8 undequantized)."""
        self._check_open()
        return self.interpreter.get_tensor(self._output["index"])

    def _read_output(self) -> Embedding:
        raw = self.interpreter.get_tensor(self._output["index"]).reshape(-1)
        if self._out_scale:  # the one place outputs are dequantized
            vec = (raw.astype(np.float32) - self._out_zp) * self._out_scale
        else:
            vec = raw.astype(np.float32, copy=True)
        if self.options.l2_normalize:
            n = float(np.sqrt(np.dot(vec, vec)))
            vec = vec / n if n > 0 else vec
        q = quantize_embedding(vec) if self.options.quantize else None
        return Embedding(vec, q, self.fingerprint)

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise InputError("this Embedder is closed; create a new one")

    def behaviour_fingerprint(self) -> str:
        """Names what the model computes, not its file: a hash of its embeddings of two fixed pictures.

        A file whose bytes changed but which embeds these pictures exactly as before (new metadata,
        uint8 instead of int8 edges around the same int8 graph) gets the same value, so a gallery can
        keep its embeddings (Gallery.check_binding). Computed once per Embedder (two embeds).
        """
        if self._behaviour is None:
            h = hashlib.sha256()
            for vector in self.behaviour_probes():
                h.update(np.round(vector.astype(np.float64), 6).tobytes())
            self._behaviour = h.hexdigest()[:20]
        return self._behaviour

    def behaviour_probes(self) -> np.ndarray:
        """The embeddings of the two probe pictures, (2, dim) float32: what behaviour_fingerprint hashes, kept by a
        gallery to compare with a tolerance (backends differ in the last digits: tflite-runtime against LiteRT,
        cosine 0.998, which no hash survives)."""
        if self._probes is None:
            self._probes = np.stack([self.embed(picture).vector for picture in probe_pictures()]).astype(np.float32)
        return self._probes

    def close(self) -> None:
        with self._lock:  # not under an embed running on another thread
            self._closed = True
            self.interpreter = None

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def describe(self) -> dict[str, Any]:
        """What ``edgeembed inspect`` prints."""
        self._check_open()
        it = self.interpreter
        f = self.input_format
        return {
            "model": self.model_path,
            "fingerprint": self.fingerprint,
            "size_bytes": self.model_size,
            "backend": self.backend,
            "input": {"height": f.height, "width": f.width, "channels": 3, "layout": "NHWC", "dtype": f.dtype.name,
                      "quantization": {"scale": f.scale, "zero_point": f.zero_point}},
            "outputs": [{"index": i, "name": d["name"], "shape": [int(v) for v in d["shape"]],
                         "dtype": np.dtype(d["dtype"]).name,
                         "quantization": {"scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}}
                        for i, d in enumerate(it.get_output_details())],
            "embedding": {"output": self._output["name"], "dim": self.dim, "l2_normalized": self.options.l2_normalize},
            "preprocessing": asdict(self.spec.preprocessing),
            "spec_source": self.spec.source,
            "task": self.spec.task,
            "architecture": self.spec.architecture,
            "weights": self.spec.weights,
            "license": self.spec.license,
            "calibration": self.spec.calibration,
            "fidelity": self.spec.fidelity,
            "extra": self.spec.extra,
        }


def _check_options(o: EmbedderOptions) -> None:
    """Options a caller typed wrong, said in one line before anything is loaded."""
    if o.num_threads is not None and (isinstance(o.num_threads, bool) or not isinstance(o.num_threads, int)
                                      or not 1 <= o.num_threads <= 256):
        raise InputError(f"num_threads must be an integer in 1..256 or None, got {o.num_threads!r}")
    if not isinstance(o.model_path, (str, os.PathLike)):
        raise InputError(f"model_path must be a path (str or pathlib.Path) to a .tflite file, got "
                         f"{type(o.model_path).__name__}")
    if o.color_order is not None:
        if not isinstance(o.color_order, str) or o.color_order.upper() not in ("RGB", "BGR"):
            raise InputError(f"color_order must be 'RGB' or 'BGR', got {o.color_order!r}")
        o.color_order = o.color_order.upper()


def probe_pictures() -> list[np.ndarray]:
    """Two fixed 256x192 RGB pictures, computed (not random: numpy's generators may change): a colour
    gradient and a fine texture, so that both smooth and detailed inputs reach the model."""
    y, x = np.mgrid[0:192, 0:256].astype(np.int64)
    gradient = np.stack([x, y * 255 // 191, (x + y) % 256], axis=-1)
    texture = np.stack([(x * x + 3 * y * y) // 7, (7 * x * y + x) // 5, (x * 31 + y * 17) ^ (x * y)], axis=-1) % 256
    return [gradient.astype(np.uint8), texture.astype(np.uint8)]


def model_fingerprint(model_bytes: bytes, spec: ModelSpec) -> str:
    """Names a model as the runtime uses it: the model bytes plus the preprocessing applied."""
    return fingerprint_of(model_bytes, asdict(spec.preprocessing))
