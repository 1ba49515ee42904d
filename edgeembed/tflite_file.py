"""Read the parts of a .tflite flatbuffer the runtime needs, without TensorFlow.

A .tflite file is a flatbuffer (schema: tensorflow/lite/schema/schema.fbs). The runtime
needs three things from it that the interpreter does not expose: the custom op names (to
recognise a model compiled for the Edge TPU before the interpreter fails on it), the
``metadata`` entries (edgeembed's ModelSpec and the standard TFLITE_METADATA), and a sanity
check that the bytes are a TFLite model at all. This module reads just those, with
``struct``, and also writes metadata entries (used by the converters and ``edgeembed tag``).
"""
from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from .errors import ModelError

FILE_IDENTIFIER = b"TFL3"

# Field indices in the schema's tables.
_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION = 0, 1, 2, 3
_MODEL_BUFFERS, _MODEL_METADATA_BUFFER, _MODEL_METADATA, _MODEL_SIGNATURES = 4, 5, 6, 7
_OPCODE_CUSTOM = 1
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA, _BUFFER_OFFSET, _BUFFER_SIZE = 0, 1, 2

# edgeembed's own metadata (spec.METADATA_NAME) is a few KB of JSON; a file can say anything, and 300 MB of it took
# 1.6 GB of memory and 8 s to parse before anything was said. A larger entry is refused before it is copied.
EDGEEMBED_ENTRY = "edgeembed"
EDGEEMBED_ENTRY_CAP = 1 << 20
# what to do about a model file whose edgeembed metadata cannot be used: edgeembed's converters did not write it
METADATA_FIX = "re-convert the model with edgeembed convert, or use a shipped model (models/)"


class _Reader:
    """Minimal flatbuffer table access over a bytes object."""

    def __init__(self, data: bytes):
        self.data = data

    def u8(self, pos: int) -> int:
        return self.data[pos]

    def u16(self, pos: int) -> int:
        return struct.unpack_from("<H", self.data, pos)[0]

    def u32(self, pos: int) -> int:
        return struct.unpack_from("<I", self.data, pos)[0]

    def i32(self, pos: int) -> int:
        return struct.unpack_from("<i", self.data, pos)[0]

    def u64(self, pos: int) -> int:
        return struct.unpack_from("<Q", self.data, pos)[0]

    def field_pos(self, table: int, index: int) -> int | None:
        """Absolute position of field ``index`` of the table at ``table``, or None if absent."""
        vtable = table - self.i32(table)
        vsize = self.u16(vtable)
        slot = 4 + 2 * index
        if slot >= vsize:
            return None
        off = self.u16(vtable + slot)
        return table + off if off else None

    def deref(self, pos: int) -> int:
        return pos + self.u32(pos)

    def vector(self, table: int, index: int) -> tuple[int, int] | None:
        """(start of elements, length) of a vector field."""
        pos = self.field_pos(table, index)
        if pos is None:
            return None
        vec = self.deref(pos)
        return vec + 4, self.u32(vec)

    def tables(self, table: int, index: int) -> list[int]:
        vec = self.vector(table, index)
        if vec is None:
            return []
        start, n = vec
        return [self.deref(start + 4 * i) for i in range(n)]

    def string(self, table: int, index: int) -> str | None:
        pos = self.field_pos(table, index)
        if pos is None:
            return None
        s = self.deref(pos)
        n = self.u32(s)
        return self.data[s + 4 : s + 4 + n].decode("utf-8", "replace")


@dataclass
class TFLiteFile:
    """What the runtime reads from a .tflite file's bytes."""

    version: int
    custom_ops: list[str]
    metadata: dict[str, bytes] = field(default_factory=dict)
    size: int = 0

    @property
    def is_edgetpu(self) -> bool:
        return any(op.startswith("edgetpu-custom-op") for op in self.custom_ops)


def read_tflite(data: bytes, name: str = "model") -> TFLiteFile:
    """Parse a .tflite's bytes. Raises ModelError (one line) if they are not a TFLite model."""
    if len(data) == 0:
        raise ModelError(f"{name} is empty (0 bytes); expected a .tflite model file: re-download or re-convert it")
    if data[:2] == b"\x1f\x8b":
        raise ModelError(f"{name} is gzip-compressed; unpack it first (gunzip, or tar -xzf for a .tar.gz) and give "
                         "the .tflite inside")
    if data[:4] == b"PK\x03\x04":
        raise ModelError(f"{name} is a zip archive; unpack it first and give the .tflite inside")
    if len(data) < 16 and data[4:8] == FILE_IDENTIFIER:
        raise ModelError(f"{name} is truncated ({len(data)} bytes: only the start of a TFLite model); "
                         "re-download or re-convert it")
    if len(data) < 16 or data[4:8] != FILE_IDENTIFIER:
        head = data[:8]
        raise ModelError(
            f"{name} is not a TFLite model (expected the 'TFL3' flatbuffer identifier, got {head!r}); "
            "give a .tflite file produced by a TFLite converter"
        )
    r = _Reader(data)
    try:
        root = r.deref(0)
        vpos = r.field_pos(root, _MODEL_VERSION)
        version = r.u32(vpos) if vpos is not None else 0
        custom_ops = []
        for op in r.tables(root, _MODEL_OPCODES):
            code = r.string(op, _OPCODE_CUSTOM)
            if code:
                custom_ops.append(code)
        buffers = r.tables(root, _MODEL_BUFFERS)
        metadata: dict[str, bytes] = {}
        for md in r.tables(root, _MODEL_METADATA):
            md_name = r.string(md, _METADATA_NAME) or ""
            bpos = r.field_pos(md, _METADATA_BUFFER)
            index = r.u32(bpos) if bpos is not None else 0
            if 0 <= index < len(buffers):
                if md_name == EDGEEMBED_ENTRY and (size := _buffer_size(r, buffers[index])) > EDGEEMBED_ENTRY_CAP:
                    raise ModelError(f"{name} has unusable edgeembed metadata: {size:,} bytes of it, where a real "
                                     f"model holds a few KB (at most {EDGEEMBED_ENTRY_CAP:,} are read); {METADATA_FIX}")
                metadata[md_name] = _buffer_bytes(r, buffers[index])
    except (struct.error, IndexError) as exc:
        reach = re.search(r"at least (\d+) bytes", str(exc))
        detail = (f"it is {len(data):,} bytes but its contents need at least {int(reach.group(1)):,}" if reach
                  else " ".join(str(exc).split()))
        raise ModelError(f"{name} is a corrupt or truncated TFLite model ({detail}); re-download or re-convert it") from None
    return TFLiteFile(version=version, custom_ops=custom_ops, metadata=metadata, size=len(data))


def _buffer_size(r: _Reader, buf: int) -> int:
    """How many bytes ``_buffer_bytes`` would return, without copying them."""
    vec = r.vector(buf, _BUFFER_DATA)
    if vec is not None:
        return min(vec[1], max(0, len(r.data) - vec[0]))
    opos, spos = r.field_pos(buf, _BUFFER_OFFSET), r.field_pos(buf, _BUFFER_SIZE)
    if opos is not None and spos is not None and r.u64(opos) > 1:
        return min(r.u64(spos), max(0, len(r.data) - r.u64(opos)))
    return 0


def _buffer_bytes(r: _Reader, buf: int) -> bytes:
    vec = r.vector(buf, _BUFFER_DATA)
    if vec is not None:
        start, n = vec
        return bytes(r.data[start : start + n])
    opos, spos = r.field_pos(buf, _BUFFER_OFFSET), r.field_pos(buf, _BUFFER_SIZE)
    if opos is not None and spos is not None:  # large models keep buffers after the flatbuffer
        off, size = r.u64(opos), r.u64(spos)
        if off > 1:
            return bytes(r.data[off : off + size])
    return b""


# --------------------------------------------------------------------------- writing
def write_metadata(data: bytes, entries: dict[str, bytes], name: str = "model") -> bytes:
    """Return a copy of the .tflite ``data`` whose metadata holds ``entries`` (replacing same names).

    The original flatbuffer is kept byte for byte after a new prefix holding a new root Model
    table, a new buffers vector (old buffers plus one per entry) and a new metadata vector.
    Every original object keeps its alignment because the prefix length is a multiple of 64.
    """
    read_tflite(data, name)  # validates
    r = _Reader(data)
    old_root = r.deref(0)
    old_buffers = r.tables(old_root, _MODEL_BUFFERS)
    for buf in old_buffers:
        opos = r.field_pos(buf, _BUFFER_OFFSET)
        if opos is not None and r.u64(opos) > 1:
            raise ModelError(f"{name} keeps its weights outside the flatbuffer (a >2 GB layout); metadata cannot be added to it")
    old_md = [
        md for md in r.tables(old_root, _MODEL_METADATA) if (r.string(md, _METADATA_NAME) or "") not in entries
    ]

    # Plan the prefix: header(8) | model vtable | model table | buffers vec | metadata vec |
    # new Metadata tables+vtables | new names | new Buffer tables | new data blobs | pad to 64.
    out = bytearray(b"\0\0\0\0" + FILE_IDENTIFIER)
    fields_copy = [_MODEL_VERSION, _MODEL_OPCODES, _MODEL_SUBGRAPHS, _MODEL_DESCRIPTION,
                   _MODEL_METADATA_BUFFER, _MODEL_SIGNATURES]
    nfields = 8
    # vtable: u16 vsize, u16 tsize, 8 x u16
    vt_pos = len(out)
    out += b"\0" * (4 + 2 * nfields)
    while len(out) % 4:
        out += b"\0"
    table_pos = len(out)
    # table: soffset + 8 u32 slots (one per field, present or not)
    out += b"\0" * (4 + 4 * nfields)
    struct.pack_into("<i", out, table_pos, table_pos - vt_pos)
    struct.pack_into("<HH", out, vt_pos, 4 + 2 * nfields, 4 + 4 * nfields)
    slot = lambda i: table_pos + 4 + 4 * i  # noqa: E731

    patches: list[tuple[int, str, object]] = []  # (slot pos, kind, target)
    for i in fields_copy:
        pos = r.field_pos(old_root, i)
        struct.pack_into("<H", out, vt_pos + 4 + 2 * i, 4 + 4 * i)
        if pos is None:
            struct.pack_into("<H", out, vt_pos + 4 + 2 * i, 0)
            continue
        if i == _MODEL_VERSION:
            struct.pack_into("<I", out, slot(i), r.u32(pos))
        else:
            patches.append((slot(i), "old", r.deref(pos)))
    for i in (_MODEL_BUFFERS, _MODEL_METADATA):
        struct.pack_into("<H", out, vt_pos + 4 + 2 * i, 4 + 4 * i)

    # buffers vector
    nbuf = len(old_buffers) + len(entries)
    patches.append((slot(_MODEL_BUFFERS), "new", len(out)))
    out += struct.pack("<I", nbuf)
    buf_slots = []
    for b in old_buffers:
        patches.append((len(out), "old", b))
        out += b"\0\0\0\0"
    for _ in entries:
        buf_slots.append(len(out))
        out += b"\0\0\0\0"
    # metadata vector
    patches.append((slot(_MODEL_METADATA), "new", len(out)))
    out += struct.pack("<I", len(old_md) + len(entries))
    for md in old_md:
        patches.append((len(out), "old", md))
        out += b"\0\0\0\0"
    md_slots = []
    for _ in entries:
        md_slots.append(len(out))
        out += b"\0\0\0\0"
    # new Metadata tables: vtable(8 bytes: vsize, tsize, name, buffer) then table
    for k, (key, _) in enumerate(entries.items()):
        while len(out) % 4:
            out += b"\0"
        vt = len(out)
        out += struct.pack("<HHHH", 8, 12, 4, 8)
        tb = len(out)
        out += struct.pack("<i", tb - vt) + b"\0\0\0\0" + struct.pack("<I", len(old_buffers) + k)
        struct.pack_into("<I", out, md_slots[k], tb - md_slots[k])
        name_pos = len(out)
        encoded = key.encode("utf-8")
        out += struct.pack("<I", len(encoded)) + encoded + b"\0"
        struct.pack_into("<I", out, tb + 4, name_pos - (tb + 4))
    # new Buffer tables, each followed by its data vector (16-byte aligned data)
    for k, (_, blob) in enumerate(entries.items()):
        while len(out) % 4:
            out += b"\0"
        vt = len(out)
        out += struct.pack("<HHH", 6, 8, 4) + b"\0\0"
        tb = len(out)
        out += struct.pack("<i", tb - vt) + b"\0\0\0\0"
        struct.pack_into("<I", out, buf_slots[k], tb - buf_slots[k])
        while (len(out) + 4) % 16:
            out += b"\0"
        vec = len(out)
        out += struct.pack("<I", len(blob)) + blob
        struct.pack_into("<I", out, tb + 4, vec - (tb + 4))
    while len(out) % 64:
        out += b"\0"
    shift = len(out)
    for pos, kind, target in patches:
        absolute = target + shift if kind == "old" else target
        struct.pack_into("<I", out, pos, absolute - pos)
    struct.pack_into("<I", out, 0, table_pos)
    result = bytes(out) + data
    read_tflite(result, name)  # the result must parse
    return result
