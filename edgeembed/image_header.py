"""What an image file's first bytes and headers say, read without decoding it.

Its format (so a HEIC photo or a text file renamed .jpg gets a line that names it), the size the decoder will
produce (so ``edgeembed.memory`` can refuse a picture too large for the memory left before the decoder
allocates it), a JPEG's frame and its scaled-decoding options, and whether a JPEG was cut short.
"""
from __future__ import annotations

import math
import re

_NO_DECODER = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF"}  # ftyp brands


def image_kind(head: bytes) -> str | None:
    """The image format its first bytes announce, or None."""
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":  # 'BM', file size, four reserved zero bytes
        return "BMP"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):  # classic or BigTIFF
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis"):
        return "AVIF"
    if head[4:8] == b"ftyp" and head[8:12] in _NO_DECODER:
        return _NO_DECODER[head[8:12]]
    if head[:12] == b"\x00\x00\x00\x0cjP  \r\n\x87\n" or head[:4] == b"\xff\x4f\xff\x51":
        return "JPEG 2000"
    if re.match(rb"P[1-6]\s+(#|\d)", head) or re.match(rb"P7\s", head):  # P7: PAM
        return "PNM"
    return None


def image_size(data: bytes, kind: str | None = None) -> tuple[int, int] | None:
    """(height, width) the decoder will produce, from the file's header without decoding: JPEG, PNG, BMP, WebP, TIFF
    (its first page, which is the one decoded), PNM/PAM, GIF (the logical screen), JPEG 2000 and AVIF (the largest
    image it declares). None for other formats or a header that does not say."""
    kind = kind or image_kind(data[:32])
    reader = _SIZE_READERS.get(kind or "")
    try:
        size = reader(data) if reader else None
    except (IndexError, ValueError):
        return None
    return size if size and size[0] > 0 and size[1] > 0 else None


def _png_size(data: bytes) -> tuple[int, int] | None:
    if data[12:16] != b"IHDR":
        return None
    return int.from_bytes(data[20:24], "big"), int.from_bytes(data[16:20], "big")


def _bmp_size(data: bytes) -> tuple[int, int] | None:
    header = int.from_bytes(data[14:18], "little")
    if header == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
        return int.from_bytes(data[20:22], "little"), int.from_bytes(data[18:20], "little")
    if header >= 40:  # BITMAPINFOHEADER or later; a negative height is a top-down picture
        return abs(int.from_bytes(data[22:26], "little", signed=True)), int.from_bytes(data[18:22], "little", signed=True)
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X":  # extended: the canvas, 24-bit width - 1 and height - 1
        return int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":  # lossy: 14-bit sizes after the start code
        return int.from_bytes(data[28:30], "little") & 0x3FFF, int.from_bytes(data[26:28], "little") & 0x3FFF
    if chunk == b"VP8L" and data[20] == 0x2F:  # lossless: 14-bit width - 1, then height - 1
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of the first image file directory, classic TIFF or BigTIFF."""
    order = "little" if data[:2] == b"II" else "big"
    big = int.from_bytes(data[2:4], order) == 43
    count_size, entry_size, value_size = (8, 20, 8) if big else (2, 12, 4)
    ifd = int.from_bytes(data[8:16] if big else data[4:8], order)
    count = int.from_bytes(data[ifd:ifd + count_size], order)
    found: dict[int, int] = {}
    for k in range(min(count, 4096)):
        entry = data[ifd + count_size + k * entry_size:ifd + count_size + (k + 1) * entry_size]
        if len(entry) < entry_size:
            break
        tag, kind = int.from_bytes(entry[:2], order), int.from_bytes(entry[2:4], order)
        if tag in (256, 257):
            width = {3: 2, 4: 4, 16: 8}.get(kind)  # SHORT, LONG, LONG8: left-justified in the value field
            if width is None:
                return None
            found[tag] = int.from_bytes(entry[entry_size - value_size:][:width], order)
    return (found[257], found[256]) if len(found) == 2 else None


def _pnm_size(data: bytes) -> tuple[int, int] | None:
    head = data[:4096]
    if head[:2] == b"P7":  # PAM: "WIDTH w" and "HEIGHT h" lines
        width, height = re.search(rb"\nWIDTH\s+(\d+)", head), re.search(rb"\nHEIGHT\s+(\d+)", head)
        return (int(height.group(1)), int(width.group(1))) if width and height else None
    tokens = re.sub(rb"#[^\n\r]*", b" ", head[2:]).split()  # comments may sit between the numbers
    return (int(tokens[1]), int(tokens[0])) if len(tokens) >= 2 else None


def _gif_size(data: bytes) -> tuple[int, int] | None:
    return int.from_bytes(data[8:10], "little"), int.from_bytes(data[6:8], "little")  # the logical screen


def _jpeg2000_size(data: bytes) -> tuple[int, int] | None:
    if data[:4] == b"\xff\x4f\xff\x51":  # a bare codestream: SIZ, the image area less its offset
        x, y, x0, y0 = (int.from_bytes(data[8 + 4 * k:12 + 4 * k], "big") for k in range(4))
        return y - y0, x - x0
    box = _find_box(data, (b"jp2h", b"ihdr"))  # the JP2 header box: height, then width
    return (int.from_bytes(box[:4], "big"), int.from_bytes(box[4:8], "big")) if box and len(box) >= 8 else None


def _avif_size(data: bytes) -> tuple[int, int] | None:
    """The largest 'ispe' (image spatial extents) property: a grid's whole picture, not one of its tiles."""
    sizes = [(int.from_bytes(b[8:12], "big"), int.from_bytes(b[4:8], "big"))
             for b in _boxes_at(data, (b"meta", b"iprp", b"ipco", b"ispe")) if len(b) >= 12]
    return max(sizes, key=lambda s: s[0] * s[1]) if sizes else None


def sample_planes(data: bytes, kind: str | None = None) -> int | None:
    """How many full-size planes of samples a JPEG 2000 or AVIF file holds (its components; an AVIF with an alpha
    image: 4), which sets how much its decoder holds at its peak (``edgeembed.memory.decode_need``); None for other
    formats or when the header does not say."""
    kind = kind or image_kind(data[:32])
    try:
        if kind == "JPEG 2000":
            if data[:4] == b"\xff\x4f\xff\x51":  # SIZ: Csiz after the image and tile sizes
                return int.from_bytes(data[40:42], "big") or None
            box = _find_box(data, (b"jp2h", b"ihdr"))
            return int.from_bytes(box[8:10], "big") or None if box and len(box) >= 10 else None
        if kind == "AVIF":  # an alpha image is an auxiliary image whose 'auxC' property names alpha
            aux = _boxes_at(data, (b"meta", b"iprp", b"ipco", b"auxC"))
            return 4 if any(b"alpha" in b or b"auxid:1" in b for b in aux) else 3
    except (IndexError, ValueError):
        return None
    return None


_FULL_BOXES = {b"meta": 4}  # boxes whose children start after a version and flags


def _boxes_at(data: bytes, path: tuple[bytes, ...], start: int = 0, end: int | None = None) -> list[bytes]:
    """The payloads of every box at ``path`` in an ISO base media file (JP2, AVIF), walking only that path."""
    end = len(data) if end is None else end
    found, i = [], start
    while i + 8 <= end:
        size, name, body = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8], i + 8
        if size == 1:  # a 64-bit size follows the name
            size, body = int.from_bytes(data[i + 8:i + 16], "big"), i + 16
        elif size == 0:  # to the end of its parent
            size = end - i
        if size < body - i:
            break
        if name == path[0]:
            if len(path) == 1:
                found.append(data[body:min(i + size, end)])
            else:
                found += _boxes_at(data, path[1:], body + _FULL_BOXES.get(name, 0), min(i + size, end))
        i += size
    return found


def _find_box(data: bytes, path: tuple[bytes, ...]) -> bytes | None:
    boxes = _boxes_at(data, path)
    return boxes[0] if boxes else None


_SIZE_READERS = {"JPEG": lambda data: jpeg_size(data), "PNG": _png_size, "BMP": _bmp_size, "WebP": _webp_size,
                 "TIFF": _tiff_size, "PNM": _pnm_size, "GIF": _gif_size, "JPEG 2000": _jpeg2000_size, "AVIF": _avif_size}


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's frame header (SOF marker) as stored, before EXIF orientation; None if absent."""
    frame = jpeg_frame(data)
    return frame[:2] if frame else None


def jpeg_coefficient_bytes(data: bytes) -> int:
    """Bytes of the whole-image coefficient buffer libjpeg keeps for a progressive JPEG (at full size, whatever
    the reduction it decodes at): 2 bytes per sample of each component at its sampling; 0 for a baseline JPEG."""
    frame = jpeg_frame(data)
    return coefficient_bytes(frame) if frame else 0


def coefficient_bytes(frame: tuple[int, int, int, list[tuple[int, int]]]) -> int:
    if frame[2] not in (0xC2, 0xC6, 0xCA, 0xCE):  # not a progressive frame header
        return 0
    h, w, _, sampling = frame
    hmax, vmax = max(s[0] for s in sampling), max(s[1] for s in sampling)
    return sum(math.ceil(math.ceil(w * hs / hmax) / 8) * math.ceil(math.ceil(h * vs / vmax) / 8) * 64 * 2
               for hs, vs in sampling)


def jpeg_frame(data: bytes) -> tuple[int, int, int, list[tuple[int, int]]] | None:
    """(height, width, SOF marker, [(H, V) sampling per component]) of a JPEG's frame header; None if absent."""
    n, i = len(data), 2
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:
            i += 1
            continue
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:
            i += 2
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a frame header: P, Y, X, Nf, components
            if i + 10 > n:
                return None
            h, w = int.from_bytes(data[i + 5:i + 7], "big"), int.from_bytes(data[i + 7:i + 9], "big")
            comps = data[i + 10:i + 10 + 3 * data[i + 9]]
            sampling = [(max(1, b >> 4), max(1, b & 15)) for b in comps[1::3]] or [(1, 1)]
            return (h, w, marker, sampling) if h and w else None
        if marker == 0xDA:  # a scan before any frame header: not a JPEG we can read the size of
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def jpeg_truncated(data: bytes) -> bool:
    """True when the main image ends before its end-of-image marker. Bytes after that marker (a motion
    photo's video, a trailer) are not the picture's: the marker segments are walked from the start."""
    if data.rstrip(b"\x00\r\n \t").endswith(b"\xff\xd9"):
        return False  # the common case, without walking
    n, i = len(data), 2
    while i + 1 < n:
        if data[i] != 0xFF:
            return False  # not a structure we can follow: leave the verdict to the decoder
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xD9:  # end of image
            return False
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            i += 2
            continue
        if i + 4 > n:
            return True
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # a scan: entropy-coded bytes up to the next marker that is not a restart or stuffing
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    return True
                nxt = data[j + 1]
                if nxt == 0x00 or nxt == 0xFF or 0xD0 <= nxt <= 0xD7:
                    i = j + 1 if nxt == 0xFF else j + 2
                    continue
                i = j
                break
    return True
