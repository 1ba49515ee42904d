"""Gallery: labelled embeddings on disk, bound to the model that made them.

Layout of a gallery folder::

    gallery.sqlite   labels, entries (label, row in the vector file, source), meta (model, threshold, ...)
    vectors.f32      float32 rows, L2-normalised, appended in enrolment order

Atomicity: an enrolment first appends its rows to the vector file past the committed end and
fsyncs them, then inserts its entries and the new committed row count in one SQLite
transaction. If the process dies (crash, SIGKILL, Ctrl-C) before that commit, the rows past
the committed count are ignored and cut off by the next write: the gallery is exactly as it
was before the enrolment. Compaction writes a new vector file and switches to it in one
transaction, so it is atomic too.

Readers follow writers: a gallery open in a running recognizer notices, before each search, that
another process committed (SQLite's ``data_version``) and reloads, so a person enrolled or removed
while the camera runs is recognized, or forgotten, from the next frame on.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import filecmp
import json
import os
import re
import secrets
import sqlite3
import stat
import threading
import time
import unicodedata
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import GalleryError, InputError
from .shipped import EARLIER_SHIPPED_BEHAVIOUR, earlier_shipped_fix

DB_NAME = "gallery.sqlite"
# a model file whose probe embeddings are this close to those a gallery kept embeds the same (one model on two
# backends: 0.998 and above; another model, or the same one quantized again, well below)
PROBE_MIN_COSINE = 0.995
# the names this module gives vector files (a compaction's: 12 hex digits; before stop 18: the time in milliseconds)
OWN_VECTOR_FILE = re.compile(r"vectors(\.[0-9a-f]{12}|\.\d{13})?\.f32")
# what a database may name as its vector file: any name a version gave (hex, milliseconds, mkstemp's 8 characters),
# never a path; the sweep after a compaction keeps to OWN_VECTOR_FILE (a user's 'vectors.backup.f32' is not ours)
NAMED_VECTOR_FILE = re.compile(r"vectors(\.[A-Za-z0-9_]{1,64})?\.f32")
FORMAT_VERSION = 1
DEFAULT_THRESHOLD = 0.5

# (database path, token) of this process's last gallery write: the token is committed with the write, so an
# interrupted command can tell whether its write went in (``last_write_committed``)
PENDING_WRITE: tuple[str, str] | None = None
GALLERY_OPENED = False  # whether this process opened or created a gallery (an interrupted eval has none to speak of)

# values to commit with a removal or a rename, from the gallery as changed (recognizer.threshold_values)
MetaAfter = Callable[["Gallery"], "dict[str, Any] | None"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, label_id INTEGER NOT NULL REFERENCES labels(id),
    row INTEGER NOT NULL UNIQUE, source TEXT, created REAL NOT NULL, info TEXT);
CREATE INDEX IF NOT EXISTS entries_label ON entries(label_id);
"""


@dataclass(frozen=True)
class Match:
    """One gallery label and how similar its closest entry is (cosine)."""

    label: str
    score: float
    entry_id: int


@dataclass(frozen=True)
class Recognition:
    """The answer for one query: ``label`` is None when the best score is below the threshold."""

    label: str | None
    score: float
    matches: list[Match] = field(default_factory=list)
    threshold: float = DEFAULT_THRESHOLD

    @property
    def known(self) -> bool:
        return self.label is not None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": round(self.score, 6),
                "matches": [{"label": m.label, "score": round(m.score, 6)} for m in self.matches]}


def _same_alignment(a: Any, b: Any) -> bool:
    """Whether two stored face alignments (keypoint names and template points) are the same to 0.01 pixel."""
    try:
        pa, pb = np.asarray(a["template"], np.float64), np.asarray(b["template"], np.float64)
        return (list(a["keypoints"]) == list(b["keypoints"]) and pa.shape == pb.shape
                and bool(np.all(np.abs(pa - pb) <= 0.01)))
    except (KeyError, TypeError, ValueError):
        return False


def _same_bytes(a: str, b: str) -> bool:
    """Whether two model files hold the same bytes (a file that cannot be read counts as another)."""
    try:
        return filecmp.cmp(a, b, shallow=False)
    except OSError:
        return False


@dataclass(frozen=True)
class ModelBinding:
    """What a gallery remembers of its model: enough to reopen it and to refuse another."""

    model_path: str
    fingerprint: str
    dim: int
    preprocessing: dict
    mode: str = "image"
    output: int | str | None = None


class Gallery:
    """A persistent, model-bound set of labelled embeddings. Use ``Gallery.create`` or ``Gallery.open``."""

    created = False  # True on the object ``create`` returns: this process made the gallery

    def __init__(self, path: Path, db: sqlite3.Connection):
        global GALLERY_OPENED
        GALLERY_OPENED = True
        self.path = path
        self._db = db
        self._lock = threading.RLock()  # one connection, usable from any thread, one user at a time
        self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        self._load_meta()
        self._matrix: np.ndarray | None = None
        self._accepted: set[str] = set()  # fingerprints of other model files check_binding accepted (same embeddings)

    # ------------------------------------------------------------------ open / create
    @classmethod
    def create(cls, path: str | os.PathLike, binding: ModelBinding, threshold: float | None = None,
               meta: dict[str, Any] | None = None) -> "Gallery":
        """A new, empty gallery at ``path`` (a folder), bound to ``binding``'s model; ``meta``: more settings,
        written with the rest, so the gallery appears complete or not at all."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise GalleryError(f"{p} exists and is not a folder; a gallery is a folder, choose another path")
        # a new folder is its owner's alone: faces and the paths of the pictures they came from are personal data
        # (a folder that already exists keeps the permissions its owner gave it)
        p.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _creation_lock(p):  # two enrolments creating the same gallery: one creates, the other finds it
            if (p / DB_NAME).exists():
                raise GalleryError(f"a gallery already exists at {p}; open it instead, or choose another path")
            _refuse_lost_database(p, ", or give another folder")
            _remove_killed_creations(p)  # none runs: we hold the lock
            fd, tmp = _new_file(p, DB_NAME + ".", ".tmp")
            os.close(fd)
            try:
                db = sqlite3.connect(tmp)
                with db:
                    db.executescript(_SCHEMA)
                    values = {
                        "format_version": FORMAT_VERSION, "model_path": binding.model_path,
                        "fingerprint": binding.fingerprint, "dim": binding.dim, "preprocessing": binding.preprocessing,
                        "mode": binding.mode, "output": binding.output,
                        "threshold": DEFAULT_THRESHOLD if threshold is None else float(threshold),
                        "rows": 0, "vectors_file": "vectors.f32", "created": time.time(), **(meta or {}),
                    }
                    db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])
                db.close()
                open(p / "vectors.f32", "wb").close()
                os.replace(tmp, p / DB_NAME)  # the gallery exists only once it is complete
            finally:
                tmp.unlink(missing_ok=True)
        gallery = cls.open(p)
        gallery.created = True
        return gallery

    @classmethod
    def open(cls, path: str | os.PathLike) -> "Gallery":
        p = Path(path)
        db_path = p / DB_NAME
        if not db_path.exists():
            if p.is_file():
                raise GalleryError(f"{p} is a file, expected a gallery folder (made by 'edgeembed enroll')")
            if p.is_dir():
                _refuse_lost_database(p)
            raise GalleryError(f"no gallery at {p} (expected {db_path}); create one with 'edgeembed enroll --model MODEL --gallery {p} DIR'")
        try:
            db = sqlite3.connect(db_path, timeout=30, check_same_thread=False)
            db.execute("PRAGMA synchronous=FULL")
            db.execute("PRAGMA secure_delete=ON")  # a removed label's rows are overwritten, not left in free pages
            db.execute("SELECT value FROM meta WHERE key='fingerprint'").fetchone()
            problem = db.execute("PRAGMA quick_check").fetchone()[0]  # every table and index, not only meta
            if problem != "ok":
                detail = next((ln for ln in problem.splitlines() if ln.strip() and not ln.startswith("***")), problem)
                raise sqlite3.DatabaseError(f"integrity check: {detail.strip()}")
        except sqlite3.DatabaseError as exc:
            if "readonly" in str(exc) and Path(str(db_path) + "-journal").exists():
                # a write cut off by a crash or power loss: SQLite rolls it back on the next open, which needs write access
                raise GalleryError(f"{db_path} has a write that was cut off ({DB_NAME}-journal beside it) and must be "
                                   "rolled back before it can be read, but the gallery is read-only here; open it once "
                                   "with write access (e.g. 'edgeembed gallery list' as its owner): nothing is lost") from None
            raise GalleryError(f"{db_path} is not a readable gallery database ({exc}); restore it from a backup") from None
        return cls(p, db)

    @classmethod
    def open_or_create(cls, path: str | os.PathLike, binding: ModelBinding) -> "Gallery":
        if (Path(path) / DB_NAME).exists():
            g = cls.open(path)
            g.check_binding(binding)
            return g
        return cls.create(path, binding)

    def _load_meta(self) -> None:
        try:
            rows = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            self.meta = {k: json.loads(v) for k, v in rows.items()}
            self.binding = ModelBinding(
                model_path=self.meta["model_path"], fingerprint=self.meta["fingerprint"], dim=int(self.meta["dim"]),
                preprocessing=self.meta["preprocessing"], mode=self.meta.get("mode", "image"),
                output=self.meta.get("output"))
            version = int(self.meta.get("format_version", 0))
            float(self.meta.get("threshold", DEFAULT_THRESHOLD))
            _check_vector_file_name(self.meta.get("vectors_file", "vectors.f32"))
            _check_row_count(self.meta.get("rows", 0))
            if not isinstance(self.binding.preprocessing, dict):
                raise ValueError(f"preprocessing must be a mapping, got {self.binding.preprocessing!r}")
        except (sqlite3.DatabaseError, KeyError, ValueError, TypeError, AttributeError) as exc:
            raise GalleryError(f"{self.path} holds a damaged gallery (meta: {exc}); restore it from a backup "
                               "(nothing was changed)") from None
        if version > FORMAT_VERSION:
            raise GalleryError(f"{self.path} was written by a newer edgeembed (format {self.meta['format_version']}); upgrade edgeembed")

    def close(self) -> None:
        """Close the database. Calling it again does nothing; anything else but ``threshold`` and ``meta`` (what was
        read last) then raises a GalleryError saying the gallery is closed."""
        with self._lock:
            if not isinstance(self._db, _ClosedConnection):
                self._db.close()
                self._db = _ClosedConnection(self.path)  # type: ignore[assignment]

    def _refresh(self) -> None:
        """Reload when another connection has committed since we last read (an enrolment, a removal, a
        threshold); our own writes reset the cache themselves."""
        try:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except (sqlite3.ProgrammingError, GalleryError):  # closed: what was read last still stands
            return
        if version != self._data_version:
            self._data_version = version
            self._load_meta()
            self._matrix = None

    def __enter__(self) -> "Gallery":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ model binding
    @property
    def threshold(self) -> float:
        with self._lock:
            self._refresh()
            return float(self.meta.get("threshold", DEFAULT_THRESHOLD))

    def set_threshold(self, value: float) -> None:
        if not is_cosine(value):
            raise InputError(f"threshold is a cosine similarity in [-1, 1], got {value!r}")
        self._set_meta({"threshold": float(value), "threshold_source": "user"}, mark=True)

    def reset_threshold(self, meta: MetaAfter | None = None) -> None:
        """Hand the threshold back to the automatic rule: the value set by hand goes, and ``meta``
        (``edgeembed.recognizer.threshold_values``) derives the automatic one in the same commit; where it derives
        none (or without ``meta``), the default."""
        with self._lock:
            try:
                with self._db:
                    self._mark_write()
                    self._db.execute("DELETE FROM meta WHERE key IN ('threshold', 'threshold_source')")
                    self._meta_after(meta)
                    self._load_meta()
            finally:
                self._matrix = None

    def check_binding(self, binding: ModelBinding, behaviour: Callable[[], str] | None = None,
                      probes: Callable[[], np.ndarray] | None = None,
                      alignment: Callable[[], dict] | None = None) -> None:
        """Refuse a model other than the gallery's own (a different fingerprint); a model accepted here may search
        the gallery with its Embeddings (``search`` refuses those of any other model).

        ``behaviour``: the model's Embedder.behaviour_fingerprint. A file that differs from the gallery's
        model but embeds its probe pictures identically is accepted; if it replaced the model at the
        gallery's own path, the gallery is re-bound to it (recorded under ``rebinds``). So is the same
        model at another path once the gallery's own path holds nothing (the model file moved, e.g. a new
        install), so that the gallery needs no --model from then on.
        ``probes``: the model's Embedder.behaviour_probes; a gallery that kept its model's (``behaviour_probes``)
        also accepts a file whose probe embeddings are within cosine PROBE_MIN_COSINE of them, for the same
        model run by another backend, whose last digits differ.
        ``alignment``: for a face model, the template its faces are aligned to (``recognizer.face_alignment_of``).
        The probe pictures do not go through it, so a file that embeds them alike but aligns faces otherwise is
        refused once the gallery knows its own template (stored at creation, or on the first open by its own model).
        """
        own = self.binding.fingerprint
        self._check_binding(binding, behaviour, probes, alignment)
        self._accepted.add(binding.fingerprint)
        if (alignment is not None and "face_alignment" not in self.meta and binding.fingerprint == own
                and not any(r.get("from") != r.get("to") for r in self.meta.get("rebinds", []) if isinstance(r, dict))):
            # only the file the faces were enrolled with tells their template: not one this open (or an earlier
            # one) re-bound the gallery to, whose template may be another
            with contextlib.suppress(sqlite3.Error):  # a read-only gallery: next time
                self._set_meta({"face_alignment": alignment()})
        if probes is not None and "behaviour_probes" not in self.meta and binding.fingerprint == self.binding.fingerprint:
            # a gallery made before the probes were kept: its own model's, once, so the tolerance covers it too
            with contextlib.suppress(sqlite3.Error):  # a read-only gallery: next time
                self._set_meta({"behaviour_probes": encode_probes(probes())})

    def _check_binding(self, binding: ModelBinding, behaviour: Callable[[], str] | None = None,
                       probes: Callable[[], np.ndarray] | None = None,
                       alignment: Callable[[], dict] | None = None) -> None:
        mine = self.binding
        moved = binding.model_path != mine.model_path and not Path(mine.model_path).exists()
        if (binding.fingerprint == mine.fingerprint and binding.model_path != mine.model_path
                and (binding.dim, binding.mode) == (mine.dim, mine.mode)):
            # the gallery's own model at another path: follow it there when its own path holds nothing or another
            # file (an upgrade replaced it, and the user brought a copy back), so later commands need no --model
            if moved or not _same_bytes(binding.model_path, mine.model_path):
                self._rebind(binding, self.meta.get("behaviour"))
            return
        # galleries enrolled with an earlier shipped file have no stored value: the project knows it
        stored = self.meta.get("behaviour") or EARLIER_SHIPPED_BEHAVIOUR.get(mine.fingerprint)
        kept = decode_probes(self.meta.get("behaviour_probes"), mine.dim)
        if (binding.fingerprint != mine.fingerprint and (binding.dim, binding.mode) == (mine.dim, mine.mode)
                and ((behaviour is not None and stored and behaviour() == stored)
                     or (probes is not None and kept is not None and _probe_agreement(probes(), kept) >= PROBE_MIN_COSINE))):
            own = self.meta.get("face_alignment")
            if alignment is not None and own is not None and not _same_alignment(alignment(), own):
                raise GalleryError(
                    f"gallery {self.path} was built with model {mine.model_path}; {binding.model_path} embeds as it did "
                    "but aligns faces to another template, so its faces would not be cut as the stored ones were; "
                    + (earlier_shipped_fix(mine.fingerprint) or "put the original model file back (--model PATH to a "
                       "copy of it), or enroll the people into a new gallery"))
            if binding.model_path == mine.model_path or moved:
                self._rebind(binding, stored)
            return
        if binding.fingerprint != mine.fingerprint and binding.model_path == mine.model_path and binding.dim == mine.dim:
            # the file at the gallery's own model path was replaced (e.g. an upgraded shipped model)
            raise GalleryError(
                f"gallery {self.path} was built with model {mine.model_path} (fingerprint {mine.fingerprint}), and that "
                "file has changed since: the stored embeddings do not fit it; "
                + (earlier_shipped_fix(mine.fingerprint) or "put the original model file back (--model PATH to a copy "
                   "of it), or enroll the pictures into a new gallery"))
        if binding.model_path == mine.model_path and binding.dim != mine.dim:
            raise GalleryError(
                f"gallery {self.path} was built with model {mine.model_path} ({mine.dim}-d), and that file has been "
                f"replaced by a {binding.dim}-d model: the stored embeddings do not fit it; put the original model "
                "file back (--model PATH to a copy of it), or enroll the pictures into a new gallery")
        if binding.fingerprint != mine.fingerprint or binding.dim != mine.dim:
            fix = ((earlier_shipped_fix(mine.fingerprint) or "pass --model with a copy of the gallery's own model (it "
                    "is no longer at that path)") if moved else "use the gallery's own model (omit --model)")
            raise GalleryError(
                f"gallery {self.path} was built with model {mine.model_path} (fingerprint {mine.fingerprint}, "
                f"{mine.dim}-d) but model {binding.model_path} ({binding.dim}-d, another model) "
                f"was given; {fix} or enroll into a new gallery")
        if binding.mode != mine.mode:
            raise GalleryError(f"gallery {self.path} holds {mine.mode} embeddings, not {binding.mode}; "
                               f"use --mode {mine.mode} or another gallery")

    def _rebind(self, binding: ModelBinding, behaviour: str | None) -> None:
        """The gallery's model file was replaced by one that embeds the same, or moved: remember the new one."""
        change: dict[str, Any] = {"from": self.binding.fingerprint, "to": binding.fingerprint, "at": time.time()}
        if binding.model_path != self.binding.model_path:
            change.update(from_path=self.binding.model_path, to_path=binding.model_path)
        values: dict[str, Any] = {"model_path": binding.model_path, "fingerprint": binding.fingerprint,
                                  "preprocessing": binding.preprocessing,
                                  "rebinds": list(self.meta.get("rebinds", [])) + [change]}
        if behaviour:
            values["behaviour"] = behaviour
        try:
            self._set_meta(values)
        except sqlite3.Error:  # a read-only gallery: accept the file for this run, check it again next time
            return
        self._load_meta()

    def _set_meta(self, values: dict[str, Any], mark: bool = False) -> None:
        """``mark``: a change the command was asked for (a threshold), which an interrupted command reports; not a
        re-bind to a moved model file, which any command may do on the way."""
        with self._lock, self._db:
            if mark:
                self._mark_write()
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])
        self.meta.update(values)

    # ------------------------------------------------------------------ reading
    @property
    def _vectors_path(self) -> Path:
        return self.path / self.meta.get("vectors_file", "vectors.f32")

    def _committed_rows(self) -> int:
        try:
            return _check_row_count(json.loads(self._db.execute("SELECT value FROM meta WHERE key='rows'").fetchone()[0]))
        except (ValueError, TypeError) as exc:
            raise GalleryError(f"{self.path} holds a damaged gallery (meta: {exc}); restore it from a backup "
                               "(nothing was changed)") from None

    @contextlib.contextmanager
    def _snapshot(self):
        """One read transaction, with the meta as it sees it (the vector file's name, the row count): another
        process's enrolment or compaction cannot commit between the reads. Inside a write transaction (add()'s
        callbacks) that one serves."""
        own = not self._db.in_transaction
        if own:
            self._db.execute("BEGIN")
        try:
            if own:
                self._load_meta()
            yield
        finally:
            if own:
                self._db.execute("COMMIT")

    def _load(self) -> None:
        """Read the vectors of the live entries, ordered by label, for search.

        All in one read transaction: another process's enrolment or compaction cannot commit between the
        reads (it waits for our shared lock), so the row count, the vector file and the entries agree."""
        with self._snapshot():
            rows_total = self._committed_rows()
            dim = self.binding.dim
            path = self._check_vectors_file(rows_total)
            all_vectors = np.fromfile(path, dtype="<f4", count=rows_total * dim).reshape(rows_total, dim) \
                if rows_total else np.zeros((0, dim), np.float32)
            self._verify_vectors(path, rows_total, all_vectors)
            rows = self._db.execute("SELECT e.id, e.row, l.name FROM entries e JOIN labels l ON l.id = e.label_id "
                                    "ORDER BY l.name, e.id").fetchall()
        past = next((r for r in rows if not 0 <= r[1] < rows_total), None)
        if past is not None:
            raise GalleryError(f"{self.path} holds a damaged gallery (entry {past[0]} points to row {past[1]} of "
                               f"{rows_total}); restore it from a backup (nothing was changed)")
        self._entry_ids = np.array([r[0] for r in rows], np.int64)
        m = np.ascontiguousarray(all_vectors[[r[1] for r in rows]]) if rows else np.zeros((0, dim), np.float32)
        norms = np.linalg.norm(m, axis=1)
        if len(m) and np.abs(norms - 1.0).max() > 1e-3:  # entries stored unnormalised by an earlier edgeembed
            m = m / np.maximum(norms, 1e-12)[:, None]
        self._matrix = m
        names = [r[2] for r in rows]
        self._label_names: list[str] = []
        starts = []
        for i, n in enumerate(names):
            if not self._label_names or self._label_names[-1] != n:
                self._label_names.append(n)
                starts.append(i)
        self._label_starts = np.array(starts, np.int64)

    @property
    def matrix(self) -> np.ndarray:
        with self._lock:
            if isinstance(self._db, _ClosedConnection):  # a cached matrix would no longer follow other writers
                raise self._db.closed_error()
            self._refresh()
            if self._matrix is None:
                self._load()
            return self._matrix  # type: ignore[return-value]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def labels(self) -> dict[str, int]:
        """Label -> number of entries, sorted by label."""
        with self._lock:
            return dict(self._db.execute(
            "SELECT l.name, COUNT(e.id) FROM labels l JOIN entries e ON e.label_id = l.id GROUP BY l.id ORDER BY l.name"))

    def entries(self, label: str | None = None) -> list[dict[str, Any]]:
        q = "SELECT e.id, l.name, e.source, e.created FROM entries e JOIN labels l ON l.id = e.label_id"
        args: tuple = ()
        if label is not None:
            q += " WHERE l.name IN (?, ?)"
            args = (label, normal_label(label))
        with self._lock:
            rows = self._db.execute(q + " ORDER BY e.id", args).fetchall()
        return [{"id": i, "label": n, "source": s, "created": c} for i, n, s, c in rows]

    def search(self, query: Any, k: int = 5) -> list[Match]:
        """The ``k`` best labels for one query (a vector or an Embedding), each by its closest entry. An Embedding
        of another model than the gallery's is refused: its vector would be compared with numbers it does not share
        (two models of one dimension, such as the shipped MobileNetV2 and EfficientNet-Lite0, give no error
        otherwise, only wrong answers)."""
        self._check_model_of(query)
        given = _vector_of(query)
        v = np.asarray(given) if isinstance(given, (np.ndarray, list, tuple)) else None
        if v is None or v.size != self.binding.dim or v.ndim > 2 or (v.ndim == 2 and v.shape[0] != 1):
            what = f"shape {v.shape}" if v is not None else type(query).__name__
            raise InputError(f"a query must be one embedding: an Embedding or a vector of {self.binding.dim} numbers "
                             f"(this gallery's model), got {what}")
        return self.search_many(v.reshape(1, -1), k)[0]

    def _check_model_of(self, embedding: Any) -> None:
        """An Embedding made by another model than the gallery's (or one ``check_binding`` accepted) is refused, and
        so is a whole picture's Embedding given to a face gallery (the same model, but not a face crop)."""
        if getattr(embedding, "kind", None) == "image" and self.binding.mode == "face":
            raise GalleryError(f"this embedding is of a whole picture, but gallery {self.path} holds faces; "
                               "recognize its faces with edgeembed.face.FaceRecognizer.for_gallery(gallery)")
        made_by = getattr(embedding, "model", None)
        if made_by is not None and made_by != self.binding.fingerprint and made_by not in self._accepted:
            raise GalleryError(f"this embedding comes from another model (fingerprint {made_by}) than gallery "
                               f"{self.path}'s ({self.binding.model_path}, {self.binding.fingerprint}); embed with the "
                               "gallery's model: edgeembed.recognizer.open_gallery_embedder(gallery)")

    def search_many(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be an integer >= 1, got {k!r}")
        with self._lock:
            m = self.matrix
            starts, names, entry_ids = self._label_starts, self._label_names, self._entry_ids
        q = _unit_rows(queries, self.binding.dim, "queries", allow_zero=True)
        if len(m) == 0:
            return [[] for _ in range(len(q))]
        scores = q @ m.T  # (N, entries)
        per_label = np.maximum.reduceat(scores, starts, axis=1)  # (N, labels)
        kk = min(int(k), per_label.shape[1])
        top = np.argsort(-per_label, axis=1)[:, :kk]
        ends = np.append(starts[1:], len(m))
        out = []
        for i in range(len(q)):
            row = []
            for j in top[i]:
                s, e = starts[j], ends[j]
                best = s + int(np.argmax(scores[i, s:e]))
                row.append(Match(names[j], float(per_label[i, j]), int(entry_ids[best])))
            out.append(row)
        return out

    def recognize(self, query: Any, threshold: float | None = None, k: int = 5) -> Recognition:
        """The best label for ``query`` (a vector or an Embedding), or None below the threshold."""
        if threshold is not None and not is_cosine(threshold):
            raise InputError(f"threshold is a cosine similarity in [-1, 1], got {threshold!r}")
        matches = self.search(query, k)
        t = self.threshold if threshold is None else float(threshold)
        if not matches:
            return Recognition(None, 0.0, [], t)
        best = matches[0]
        return Recognition(best.label if best.score >= t else None, best.score, matches, t)

    # ------------------------------------------------------------------ writing
    def add(self, labels: Sequence[str], vectors: np.ndarray, sources: Sequence[str | None] | None = None,
            infos: Sequence[dict | None] | None = None,
            meta: dict[str, Any] | Callable[[list[str], np.ndarray], dict[str, Any] | None] | None = None,
            skip: Callable[[list[str], np.ndarray, list[str | None]], list[Any]] | None = None) -> list[int]:
        """Add entries in one atomic step: all of them, or (on any failure) none. ``vectors``: an (N, dim) array, or
        N Embeddings (another model's are refused, as in ``search``).

        ``meta``: values (e.g. the new threshold) committed in the same transaction; a function is called
        under the write lock, on the gallery as committed, with the labels as stored and the vectors as stored. The lock is taken before the vector file is
        touched, so two enrolments at once queue instead of both appending at the same committed end.
        ``skip``: called under the same lock (labels, vectors, sources); the entries it gives a truthy value for are
        not added (pictures already enrolled: checked there, two enrolments of one folder at once add it once).
        Returns the ids of the entries added, in order.
        """
        n = len(labels)
        if isinstance(vectors, (list, tuple)) and any(hasattr(v, "vector") for v in vectors):  # Embeddings
            for v in vectors:
                self._check_model_of(v)
            vectors = np.stack([np.asarray(_vector_of(v)) for v in vectors]) if vectors else np.zeros((0, self.binding.dim))
        shape = np.shape(vectors)
        if len(shape) != 2 or shape != (n, self.binding.dim):
            raise InputError(f"vectors must be ({n}, {self.binding.dim}) for {n} labels, got {shape}")
        vectors = np.ascontiguousarray(_unit_rows(vectors, self.binding.dim, "vectors"), dtype="<f4")
        for name in set(labels):
            check_label(name)
        labels = [normal_label(name) for name in labels]
        if n == 0:
            return []
        sources = list(sources) if sources is not None else [None] * n
        infos = list(infos) if infos is not None else [None] * n
        if len(sources) != n or len(infos) != n:
            raise InputError(f"{n} labels need {n} sources and infos (or none), got {len(sources)} and {len(infos)}")
        appended: list[bool] = []
        try:
            return self._add(labels, vectors, sources, infos, meta, skip, appended)
        except Exception:
            if appended:  # a failed commit (full disk, read-only database) left the new rows in the vector file
                self._drop_uncommitted_rows()
            raise

    def _add(self, labels, vectors, sources, infos, meta, skip, appended) -> list[int]:  # noqa: ANN001 - add()'s
        n = len(labels)
        now = time.time()
        ids: list[int] = []
        with self._lock, self._db:  # one transaction: entries, committed row count, meta
            self._db.execute("BEGIN IMMEDIATE")  # the write lock, held until the commit
            self._load_meta()  # another process may have committed since this gallery was opened
            self._matrix = None
            if skip is not None:
                keep = [i for i, why in enumerate(skip(labels, vectors, sources)) if not why]
                if not keep:
                    return []
                labels, sources, infos = [labels[i] for i in keep], [sources[i] for i in keep], [infos[i] for i in keep]
                vectors, n = vectors[keep], len(keep)
            rows0 = self._committed_rows()
            labels = self._stored_spellings(labels)
            extra = meta(labels, vectors) if callable(meta) else meta
            path = self._check_vectors_file(rows0)
            file_crc = zlib.crc32(vectors.tobytes(), self._committed_crc(path, rows0))
            appended.append(True)  # from here on the file may hold rows past the committed end
            self._append_rows(path, rows0, vectors)
            self._mark_write()
            for name in sorted(set(labels)):
                self._db.execute("INSERT OR IGNORE INTO labels(name, created) VALUES (?, ?)", (name, now))
            label_ids = dict(self._db.execute("SELECT name, id FROM labels"))
            for i in range(n):
                cur = self._db.execute(
                    "INSERT INTO entries(label_id, row, source, created, info) VALUES (?, ?, ?, ?, ?)",
                    (label_ids[labels[i]], rows0 + i, sources[i], now, json.dumps(infos[i]) if infos[i] else None))
                ids.append(int(cur.lastrowid))
            values = {**(extra or {}), "rows": rows0 + n,
                      "last_row_check": _row_check(rows0 + n, path.name, vectors[-1], file_crc)}
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                 [(k, json.dumps(v)) for k, v in values.items()])
            self.meta.update(values)
            self._matrix = None
        return ids

    def _append_rows(self, path: Path, rows0: int, vectors: np.ndarray) -> None:
        """Under the write lock: the new rows after the ``rows0`` committed ones. If writing fails (a full disk),
        the file is cut back to the committed rows: the half-written rows held the space a removal then needed.
        Unbuffered: a buffered file would retry its failed write when cut back or closed, and fail again."""
        committed = rows0 * self.binding.dim * 4
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)  # never through a link placed since the check
        try:
            os.ftruncate(fd, committed)  # drop rows of an enrolment that never committed
            data, at = memoryview(vectors.tobytes()), committed
            while data:
                written = os.pwrite(fd, data, at)
                data, at = data[written:], at + written
            os.fsync(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, committed)
            raise
        finally:
            os.close(fd)

    def _drop_uncommitted_rows(self) -> None:
        """After a failed add: cut the vector file back to the committed rows, under the write lock (another
        writer's rows are only ever past the committed end while it holds that lock). Best effort: the next add
        cuts them too."""
        with contextlib.suppress(Exception), self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._load_meta()
            path, committed = self._vectors_path, self._committed_rows() * self.binding.dim * 4
            if path.is_file() and not path.is_symlink() and path.stat().st_size > committed:
                os.truncate(path, committed)

    def _mark_write(self) -> None:
        """Inside a write transaction: a new token committed with it (``last_write_committed``)."""
        global PENDING_WRITE
        token = secrets.token_hex(8)
        PENDING_WRITE = (str((self.path / DB_NAME).resolve()), token)
        self._db.execute("INSERT OR REPLACE INTO meta VALUES ('last_write', ?)", (json.dumps(token),))

    def _check_vectors_file(self, rows: int) -> Path:
        """The vector file, refused when it holds fewer than the ``rows`` committed rows (cut short or lost):
        writing to it would pad the gap, and every later answer would come from the wrong rows."""
        path = self._vectors_path
        if path.is_symlink():  # writes would go wherever it points (cut to the row count, then overwritten)
            raise GalleryError(f"{path} is a symbolic link (to {os.readlink(path)}); a gallery's vector file must be a "
                               "file of its own in the gallery folder: replace the link by a copy of the file it "
                               "points to (nothing was changed)")
        size = path.stat().st_size if path.exists() else 0
        row_bytes = self.binding.dim * 4
        if size < rows * row_bytes:
            what = "is missing" if not path.exists() else f"holds {size // row_bytes} rows"
            raise GalleryError(f"{path} {what}, but the gallery has {rows} committed rows: the gallery is damaged; "
                               "restore the folder from a backup (nothing was changed)")
        check = self._row_check_for(path, rows)
        if check.get("crc") is not None:
            with open(path, "rb") as f:
                f.seek((rows - 1) * row_bytes)
                if zlib.crc32(f.read(row_bytes)) != check["crc"]:
                    raise GalleryError(f"{path} is not this gallery's vector file (its last committed row is not the one "
                                       "the gallery wrote: replaced by another gallery's, or damaged); restore the "
                                       "folder from a backup (nothing was changed)")
        return path

    def _row_check_for(self, path: Path, rows: int) -> dict[str, Any]:
        """The row check (``_row_check``) the gallery recorded, when it is for these ``rows`` of ``path``; else {}.
        Recorded by every add and compaction with the row count and file it is for; a gallery written since by an
        earlier edgeembed (another count or file) or before it existed is not checked until its next write."""
        check = self.meta.get("last_row_check") or {}
        return check if rows and check.get("rows") == rows and check.get("file") == path.name else {}

    def _recorded_crc(self, path: Path, rows: int) -> int | None:
        """The CRC-32 of the first ``rows`` rows of ``path`` as the gallery recorded it, or None (none recorded)."""
        crc = self._row_check_for(path, rows).get("file_crc")
        return int(crc) if crc is not None else None

    def _committed_crc(self, path: Path, rows: int) -> int:
        """Under the write lock: the CRC-32 of the committed rows, to chain an append's rows onto (read from the
        file only when none was recorded)."""
        recorded = self._recorded_crc(path, rows) if rows else 0
        return recorded if recorded is not None else _file_crc(path, rows * self.binding.dim * 4)

    def _verify_vectors(self, path: Path, rows: int, vectors: np.ndarray | None = None) -> None:
        """Refuse committed rows that are not what was written (a failing SD card, a flipped bit, a block read back
        as 0xFF): every search would give wrong answers and the next enrolment would store a wrong threshold.
        ``vectors``: the rows already read, else they are read from ``path``."""
        recorded = self._recorded_crc(path, rows)
        if vectors is not None and not np.isfinite(vectors).all():
            problem = "it holds values that are not numbers (a failing SD card or disk, or an early edgeembed stored them?)"
        elif recorded is None or not rows:
            return
        elif (zlib.crc32(np.ascontiguousarray(vectors, dtype="<f4")) if vectors is not None
              else _file_crc(path, rows * self.binding.dim * 4)) != recorded:
            problem = "its rows do not match the checksum the gallery wrote with them (a failing SD card or disk?)"
        else:
            return
        raise GalleryError(f"{path} is damaged: {problem}; restore the gallery folder from "
                           "a backup, or enroll the pictures into a new gallery (nothing was changed)")

    def remove_label(self, label: str, meta: MetaAfter | None = None) -> int:
        """Remove a label and all its entries; returns how many entries went. ``meta``: see ``_meta_after``."""
        with self._lock:
            return self._remove_label(label, meta)

    def _remove_label(self, label: str, meta: MetaAfter | None = None) -> int:
        row = self._label_row(label)
        if row is None:
            raise GalleryError(f"label {label!r} is not in gallery {self.path}; 'edgeembed gallery list' shows the labels")
        try:
            with self._db:
                self._mark_write()
                n = self._db.execute("DELETE FROM entries WHERE label_id=?", (row[0],)).rowcount
                self._db.execute("DELETE FROM labels WHERE id=?", (row[0],))
                self._meta_after(meta)
        finally:
            self._matrix = None
        return n

    def _meta_after(self, meta: MetaAfter | None) -> None:
        """Inside a removal's or a rename's write transaction: ``meta`` (a function of the gallery as changed, not
        yet committed: e.g. the automatic threshold re-derived without a removed mislabelled picture) gives values
        committed with the change, so the change and its threshold are never apart."""
        if meta is None:
            return
        self._load_meta()
        self._matrix = None  # read again inside this transaction: the change is visible to it
        values = meta(self)
        if values:
            self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()])
            self.meta.update(values)

    def _stored_spellings(self, labels: Sequence[str]) -> list[str]:
        """Each label as the gallery already spells it when only Unicode form or spaces differ (a label written
        by an earlier edgeembed, before labels were normalised), else its normal form."""
        known: dict[str, str] = {}
        for (name,) in self._db.execute("SELECT name FROM labels ORDER BY name"):
            known.setdefault(normal_label(name), name)
        for (name,) in self._db.execute("SELECT name FROM labels ORDER BY name"):
            if normal_label(name) == name:
                known[name] = name  # the normal spelling wins when both exist
        return [known.get(n, n) for n in labels]

    def _label_row(self, label: str) -> tuple | None:
        """The label's row, found as typed, else as the gallery spells its normal form (``_stored_spellings``: a
        gallery written before labels were normalised may hold "Zoe\u0308" or " Bob ")."""
        row = self._db.execute("SELECT id FROM labels WHERE name = ?", (label,)).fetchone()
        if row is None:
            spelled = self._stored_spellings([normal_label(label)])[0]
            row = self._db.execute("SELECT id FROM labels WHERE name = ?", (spelled,)).fetchone()
        return row

    def remove_entry(self, entry_id: int, meta: MetaAfter | None = None) -> None:
        """Remove one entry (its label too when it was the last). ``meta``: see ``_meta_after``."""
        if isinstance(entry_id, bool) or not isinstance(entry_id, (int, np.integer)):
            raise InputError(f"an entry id is an integer ('edgeembed gallery list --entries' shows them), got {entry_id!r}")
        with self._lock:
            try:
                with self._db:
                    self._mark_write()
                    cur = self._db.execute("DELETE FROM entries WHERE id=?", (int(entry_id),))
                    if cur.rowcount == 0:
                        raise GalleryError(f"entry {entry_id} is not in gallery {self.path}; 'edgeembed gallery list "
                                           "--entries' shows them")
                    self._db.execute("DELETE FROM labels WHERE id NOT IN (SELECT DISTINCT label_id FROM entries)")
                    self._meta_after(meta)
            finally:
                self._matrix = None

    def rename(self, old: str, new: str, meta: MetaAfter | None = None) -> str:
        """Rename a label; renaming onto an existing label merges the two. Returns what happened: "renamed",
        "merged" or "unchanged" (``new`` is already its name). ``meta``: see ``_meta_after``."""
        check_label(new)
        new = normal_label(new)
        with self._lock:
            try:
                return self._rename(old, new, meta)
            finally:
                self._matrix = None

    def _rename(self, old: str, new: str, meta: MetaAfter | None = None) -> str:
        row = self._label_row(old)
        if row is None:
            raise GalleryError(f"label {old!r} is not in gallery {self.path}; 'edgeembed gallery list' shows the labels")
        with self._db:
            if self._db.execute("SELECT name FROM labels WHERE id=?", (row[0],)).fetchone()[0] == new:
                return "unchanged"
            target = self._db.execute("SELECT id FROM labels WHERE name=?", (new,)).fetchone()
            self._mark_write()
            if target is None:
                self._db.execute("UPDATE labels SET name=? WHERE id=?", (new, row[0]))
            else:
                self._db.execute("UPDATE entries SET label_id=? WHERE label_id=?", (target[0], row[0]))
                self._db.execute("DELETE FROM labels WHERE id=?", (row[0],))
            self._meta_after(meta)
        return "renamed" if target is None else "merged"

    def compact(self) -> int:
        """Rewrite the vector file without rows of removed entries; returns rows dropped.

        Holds the write lock from the first read to the commit: an enrolment at the same time waits, and its
        rows can neither be left out of the new file nor renumbered wrongly."""
        with self._lock:
            return self._compact()

    def _compact(self) -> int:
        new_path: Path | None = None
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                self._load_meta()
                rows_total = self._committed_rows()
                live = self._db.execute("SELECT id, row FROM entries ORDER BY row").fetchall()
                current = self._check_vectors_file(rows_total)  # a damaged gallery is said so, not "0 dropped"
                if len(live) == rows_total:
                    self._verify_vectors(current, rows_total)
                    live = None  # nothing to drop
                else:
                    dim = self.binding.dim
                    old = np.fromfile(current, dtype="<f4", count=rows_total * dim).reshape(rows_total, dim)
                    self._verify_vectors(current, rows_total, old)  # a damaged file is not copied as if sound
                    # a name no file has: never the live file, even when the clock repeats (a board without a clock)
                    fd, new_path = _new_file(self.path, "vectors.", ".f32")
                    os.fchmod(fd, stat.S_IMODE(current.stat().st_mode))  # a chmod 600 of the file it replaces stays
                    new_name = new_path.name
                    kept = np.ascontiguousarray(old[[r for _, r in live]])
                    with os.fdopen(fd, "wb") as f:
                        f.write(kept.tobytes())
                        f.flush()
                        os.fsync(f.fileno())
                    check = _row_check(len(kept), new_name, kept[-1], zlib.crc32(kept)) if len(kept) else None
                    self._db.execute("UPDATE entries SET row = -1 - row")
                    self._db.executemany("UPDATE entries SET row=? WHERE id=?",
                                         [(i, eid) for i, (eid, _) in enumerate(live)])
                    values = {"rows": len(live), "vectors_file": new_name, "last_row_check": check}
                    self._db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                                         [(k, json.dumps(v)) for k, v in values.items()])
                    self._mark_write()
        except BaseException:  # a full disk, a failed commit, Ctrl-C: the copy goes, the gallery is as it was
            # unless the commit went in and only then came the interrupt: the copy is then the gallery's vector file
            if new_path is not None and self._named_vector_file() not in (new_path.name, None):
                new_path.unlink(missing_ok=True)
            raise
        self._sweep_vector_files()  # the file replaced, and what a compaction killed before or after its commit left
        if live is None:
            return 0
        self.meta.update(values)
        self._matrix = None
        return rows_total - len(live)

    def _named_vector_file(self) -> str | None:
        """The vector file the committed database names; None when it cannot be read."""
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='vectors_file'").fetchone()
        except sqlite3.Error:
            return None
        return json.loads(row[0]) if row else "vectors.f32"

    def _sweep_vector_files(self) -> None:
        """Remove the vector files the gallery does not name: the one this compaction replaced, the copy of a
        compaction killed before its commit, the old file of one killed after it. Under the write lock, with the
        live name read from the database: every compaction makes its copy while holding that lock, so no file
        removed here is one another process is about to commit, however long this process was stopped."""
        try:
            with self._db:
                self._db.execute("BEGIN IMMEDIATE")
                keep = self._named_vector_file()
                for f in self.path.glob("vectors*.f32") if keep is not None else ():
                    if f.name != keep and OWN_VECTOR_FILE.fullmatch(f.name):  # never a user's 'vectors (copy).f32'
                        f.unlink(missing_ok=True)
            with _creation_lock(self.path):
                _remove_killed_creations(self.path)
        except (OSError, sqlite3.Error):  # a leftover file costs only space; the next compaction sweeps again
            pass

    def check(self) -> None:
        """Refuse a gallery whose vector file is missing, cut short or another gallery's (GalleryError), as every
        search and write would: for ``gallery list``, which reads only the database."""
        with self._lock, self._snapshot():  # a compaction committed since the gallery was opened renamed the file
            rows = self._committed_rows()
            self._verify_vectors(self._check_vectors_file(rows), rows)

    def summary(self) -> dict[str, Any]:
        labels = self.labels()
        return {"gallery": str(self.path), "entries": len(self), "labels": labels, "label_count": len(labels),
                "model": self.binding.model_path, "fingerprint": self.binding.fingerprint, "dim": self.binding.dim,
                "mode": self.binding.mode, "threshold": self.threshold, "model_file": self.model_file_state()}

    def model_file_state(self) -> str:
        """'same' while the file at the gallery's model path is the one it was enrolled with, 'missing' once it has
        gone, 'changed' once another file is there (an upgrade, a copy over it), 'unreadable' when it cannot be read. Read from the file's bytes and the
        stored preprocessing, without opening the model: whether a changed file still fits is the model check's
        (it runs when a command embeds)."""
        from .spec import fingerprint_of  # noqa: PLC0415

        try:
            data = Path(self.binding.model_path).read_bytes()
        except FileNotFoundError:
            return "missing"
        except OSError:  # a folder, no permission, a failing card
            return "unreadable"
        return "same" if fingerprint_of(data, self.binding.preprocessing) == self.binding.fingerprint else "changed"


def _refuse_lost_database(folder: Path, alternative: str = "") -> None:
    """A folder with vectors but no database: a gallery whose database was lost or moved, named as such (not
    overwritten by a new gallery, not 'no gallery here: create one')."""
    stray = [f.name for f in folder.glob("vectors*.f32") if f.stat().st_size > 0]
    if stray:
        raise GalleryError(f"{folder} holds {stray[0]} but no {DB_NAME}: a gallery whose database was lost or moved; "
                           f"restore {DB_NAME} from a backup{alternative} (nothing was changed)")


def _remove_killed_creations(folder: Path) -> None:
    """The database copies of creations killed before their rename; call under ``_creation_lock``."""
    for f in folder.glob(DB_NAME + ".*.tmp"):
        f.unlink(missing_ok=True)


def last_write_committed() -> bool | None:
    """Whether this process's last gallery write is in its gallery (its token committed): for an interrupted command's
    last line. None when this process began no write, or the database cannot be read now."""
    if PENDING_WRITE is None:
        return None
    path, token = PENDING_WRITE
    try:
        db = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=5)
        try:
            row = db.execute("SELECT value FROM meta WHERE key='last_write'").fetchone()
        finally:
            db.close()
    except (sqlite3.Error, ValueError):
        return None
    return row is not None and json.loads(row[0]) == token


@contextlib.contextmanager
def _creation_lock(folder: Path):
    """An exclusive lock on the gallery's folder itself while a gallery is created in it (POSIX flock on the
    directory: no lock file is left behind; elsewhere no lock)."""
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock (some NFS): create as before, unlocked
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _new_file(folder: Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """A file no other has the name of, opened for writing, with the permissions any new file gets here (the
    umask's: a new gallery's folder, its owner's alone, is what keeps others out; mkstemp's 0600 would lock out a
    recognizer running as another user the owner let into the folder)."""
    while True:
        path = folder / f"{prefix}{secrets.token_hex(6)}{suffix}"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue


def _row_check(rows: int, file: str, last_row: np.ndarray, file_crc: int) -> dict[str, Any]:
    """What ties the vector file to the database: its committed row count, its name, its last row's CRC-32 (checked
    on every open, cheaply) and the CRC-32 of all its committed rows (checked whenever they are all read)."""
    return {"rows": int(rows), "file": file, "crc": zlib.crc32(np.ascontiguousarray(last_row, dtype="<f4").tobytes()),
            "file_crc": int(file_crc)}


def encode_probes(probes: np.ndarray) -> str:
    """A model's probe embeddings as a gallery keeps them (base64 of little-endian float32)."""
    return base64.b64encode(np.ascontiguousarray(probes, dtype="<f4").tobytes()).decode("ascii")


def decode_probes(text: Any, dim: int) -> np.ndarray | None:
    """The probe embeddings a gallery kept, (2, dim), or None (none kept, or unreadable)."""
    try:
        probes = np.frombuffer(base64.b64decode(text, validate=True), "<f4").reshape(-1, dim)
    except (TypeError, ValueError, binascii.Error):
        return None
    return probes if len(probes) and np.isfinite(probes).all() else None


def _probe_agreement(probes: np.ndarray, kept: np.ndarray) -> float:
    """The lowest cosine between a model's probe embeddings and those a gallery kept."""
    a, b = np.asarray(probes, np.float64), np.asarray(kept, np.float64)
    if a.shape != b.shape:
        return -1.0
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(cos.min())


def _file_crc(path: Path, nbytes: int) -> int:
    """The CRC-32 of the first ``nbytes`` bytes of ``path``, read in 4 MB pieces."""
    crc = 0
    with open(path, "rb") as f:
        while nbytes > 0:
            chunk = f.read(min(nbytes, 1 << 22))
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
            nbytes -= len(chunk)
    return crc


def _check_vector_file_name(name: Any) -> None:
    """The vector file the database names: one of the names a gallery gives its own files, in its own folder. A
    crafted or damaged name ('../notes.txt', an absolute path) would have an enrolment cut that file and write
    into it."""
    if not (isinstance(name, str) and NAMED_VECTOR_FILE.fullmatch(name)):
        raise ValueError(f"vectors_file must name a vector file in the gallery folder (vectors.f32 or "
                         f"vectors.<id>.f32), got {name!r}")


def _check_row_count(rows: Any) -> int:
    if type(rows) is not int or rows < 0:
        raise ValueError(f"rows must be a whole number >= 0, got {rows!r}")
    return rows


# right-to-left and isolate overrides: a label holding one shows other text than it is (in a terminal, a log)
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def _is_control(c: str) -> bool:
    return unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS


def check_label(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"a label must be a non-empty string, got {name!r}")
    bad = next((c for c in name if _is_control(c)), None)
    if bad is not None:  # a folder of photos someone sent names the label: ESC[2J would clear the terminal it is shown in
        raise InputError(f"a label must not hold control characters (a terminal or a log would obey them), got "
                         f"{name!r} with {bad!r}: rename that folder, or give another label")


def shown_label(name: str) -> str:
    """A label as text output prints it: control characters as escapes (\\x1b, \\n), so that a label of a gallery from
    before they were refused cannot clear a terminal or forge an output line."""
    if not any(_is_control(c) for c in name):
        return name
    return "".join(c.encode("unicode_escape").decode("ascii") if _is_control(c) else c for c in name)


def normal_label(name: str) -> str:
    """One spelling per name: Unicode NFC (a Mac writes folder names decomposed, a keyboard types them
    composed, and "Zoë" would otherwise be two people) without surrounding spaces."""
    return unicodedata.normalize("NFC", name).strip()


class _ClosedConnection:
    """Stands in for a closed gallery's database connection: every use says the gallery is closed."""

    def __init__(self, path: Path):
        self.path = path

    def closed_error(self) -> GalleryError:
        return GalleryError(f"gallery {self.path} is closed; open it again with Gallery.open")

    def __getattr__(self, name: str) -> Any:
        raise self.closed_error()

    def __enter__(self) -> Any:
        raise self.closed_error()

    def __exit__(self, *exc: object) -> None:
        return None


def is_cosine(value: Any) -> bool:
    """A finite number from -1 to 1 (not True/False, which numpy and Python take as 1 and 0)."""
    return (not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
            and -1.0 <= float(value) <= 1.0)


def _vector_of(query: Any) -> Any:
    return getattr(query, "vector", query)  # an Embedding, or the vector itself


def _unit_rows(vectors: Any, dim: int, what: str, allow_zero: bool = False) -> np.ndarray:
    """(N, dim) float32 rows of length 1, or one line saying what is wrong with them. ``allow_zero``: an all-zero
    query (a model's answer to a black frame) stays zero and matches nothing, instead of stopping a live run."""
    v = np.asarray(vectors)
    if v.ndim != 2 or v.shape[1] != dim:
        raise InputError(f"{what} must be (N, {dim}), got {v.shape}")
    if not (np.issubdtype(v.dtype, np.floating) or np.issubdtype(v.dtype, np.integer)):
        raise InputError(f"{what} must be numbers, got dtype {v.dtype}")
    v = v.astype(np.float32, copy=False)
    if not np.isfinite(v).all():
        raise InputError(f"{what} hold NaN or infinite values; embed the picture again")
    norms = np.linalg.norm(v, axis=1)
    if (norms == 0).any() and not allow_zero:
        raise InputError(f"{what} hold an all-zero vector, which has no direction to compare")
    if len(v) and np.abs(norms[norms > 0] - 1.0).max(initial=0.0) > 1e-3:  # the embedder's own vectors stay as they are
        v = v / np.where(norms > 0, norms, 1.0)[:, None]
    return v
