"""How much memory this process may still take, so a picture too large to decode is refused in one line.

On a small board (a 512 MB Pi Zero) or in a container with a memory limit, decoding a 100-megapixel
panorama does not fail: the allocation succeeds and the kernel kills the process when the pages are
touched. Measured here (benchmarks/bench_decode_memory.py): decoding takes about 2.1x the decoded picture
at its peak (the decoder's output and its RGB copy); ``DECODE_PEAK`` keeps a little more.
"""
from __future__ import annotations

import os
from pathlib import Path

DECODE_PEAK = 2.3  # peak memory of decode + colour conversion, in decoded pictures (measured 2.05 JPEG, 2.18 PNG)
CHECK_ABOVE = 64 << 20  # decodes needing less than this (a baseline picture of about 9 megapixels) are not checked


def available_bytes() -> int | None:
    """Memory this process can still use: the system's available memory and swap, and, under a cgroup
    memory limit (v1 or v2, its ancestors included), the room left below it. None when nothing says."""
    figures = [v for v in (_meminfo_available(), _cgroup_room()) if v is not None]
    return min(figures) if figures else None


def _meminfo_available() -> int | None:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line)
        avail = int(fields["MemAvailable"].split()[0]) * 1024
        return avail + int(fields.get("SwapFree", "0 kB").split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def _cgroup_room() -> int | None:
    """The least room (limit minus usage, plus reclaimable file cache) of this process's memory cgroup and of
    each ancestor up to its mount, cgroup v1 or v2; None without a limit."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = _cgroup_mounts()
    except OSError:
        return None
    for line in lines:  # cgroup v1: the memory controller's hierarchy
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(",") and "memory" in mounts:
            return _walk(_group_dir(path, *mounts["memory"]), mounts["memory"][1], v1=True)
    for line in lines:  # cgroup v2: the unified hierarchy
        if line.startswith("0::") and "cgroup2" in mounts:
            return _walk(_group_dir(line[3:], *mounts["cgroup2"]), mounts["cgroup2"][1], v1=False)
    return None


def _cgroup_mounts() -> dict[str, tuple[str, Path]]:
    """{"memory": (root, mount point)} for cgroup v1's memory hierarchy, {"cgroup2": ...} for v2, from mountinfo."""
    found: dict[str, tuple[str, Path]] = {}
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3:
            continue
        root, point = fields[3], Path(fields[4].replace("\\040", " "))
        if tail[0] == "cgroup" and "memory" in tail[2].split(","):
            found.setdefault("memory", (root, point))
        elif tail[0] == "cgroup2":
            found.setdefault("cgroup2", (root, point))
    return found


def _group_dir(path: str, root: str, point: Path) -> Path:
    """Where the process's cgroup ``path`` (as /proc/self/cgroup names it) is under the mount of ``root`` at
    ``point``. In a container the file may name the host's path while the container's own group is mounted
    at ``point``: then the mount point itself is the group."""
    rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
    group = point / ("" if rel == "." else rel)
    return group if group.is_dir() else point


def _stat(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _walk(group: Path, point: Path, v1: bool) -> int | None:
    """The least room of ``group`` and its ancestors up to the mount point ``point`` (usage is hierarchical in
    both versions: a group's usage counts its children's, so siblings' memory is seen at the common parent)."""
    room = None
    while True:
        try:
            if v1:
                limit = int((group / "memory.limit_in_bytes").read_text())
                usage = int((group / "memory.usage_in_bytes").read_text())
                stat = _stat(group / "memory.stat")
                cache = stat.get("total_inactive_file", stat.get("inactive_file", 0))
                limited = limit < 1 << 60  # "no limit" is the largest page-aligned 64-bit number
            else:
                text = (group / "memory.max").read_text().strip()
                limited = text != "max"
                limit = int(text) if limited else 0
                usage = int((group / "memory.current").read_text())
                cache = _stat(group / "memory.stat").get("inactive_file", 0)
            if limited:
                free = max(0, limit - usage + cache)
                room = free if room is None else min(room, free)
        except (OSError, ValueError):
            pass
        if group == point or group.parent == group or point not in group.parents:
            return room
        group = group.parent


def decode_peak(kind: str | None = None, planes: int | None = None) -> float:
    """Peak memory of decoding a picture of this format to RGB, in decoded pictures. Most decoders hold their output
    and its RGB copy (JPEG, PNG, TIFF, PNM, BMP measured 2.0-2.2; WebP 2.4, 2.7 with alpha); OpenJPEG holds 4 bytes per sample of each of the
    file's ``planes`` besides (3 components 5.1-5.5, 4: 6.5, 1: 2.4); libavif about 6 (5.6-6.0), twice that with
    an alpha image (11.6); GIF 4.0-4.1 (benchmarks/bench_decode_memory.py)."""
    if kind == "JPEG 2000":
        return 4 * (planes or 3) / 3 + 1.6
    if kind == "AVIF":
        return 12.2 if (planes or 3) > 3 else 6.1
    if kind == "GIF":
        return 4.4
    if kind == "WebP":
        return 3.0
    return DECODE_PEAK


def decode_need(width: int, height: int, reduction: int = 1, coefficient_bytes: int = 0, kind: str | None = None,
                planes: int | None = None) -> int:
    """Peak bytes of decoding a ``width`` x ``height`` picture at 1/``reduction`` to RGB; ``kind`` and ``planes``
    (``edgeembed.image_header.image_kind`` and ``sample_planes``) for the decoders that need more (``decode_peak``).

    ``coefficient_bytes``: a progressive JPEG's whole-image coefficient buffer, which libjpeg keeps at full size
    whatever the reduction (2 bytes per sample: 3 bytes per pixel at 4:2:0, 6 at 4:4:4; measured with a 4:4:4
    file read at 1/8: 129x the decoded picture). It lives beside the decoder's output, not beside the RGB copy."""
    decoded = (width // reduction) * (height // reduction) * 3
    peak = decode_peak(kind, planes)
    return int(max(decoded * peak, coefficient_bytes + decoded * (peak - 1)))


def check_decode(name: str, width: int, height: int, reduction: int = 1, coefficient_bytes: int = 0,
                 kind: str | None = None, planes: int | None = None) -> None:
    """Raise ImageError when decoding a ``width`` x ``height`` picture (at 1/``reduction``) needs more memory than
    is left; no-op for ordinary pictures and where the available memory cannot be read."""
    need = decode_need(width, height, reduction, coefficient_bytes, kind, planes)
    if need < CHECK_ABOVE:
        return
    room = available_bytes()
    if room is None or need <= room:
        return
    from .errors import ImageError  # noqa: PLC0415

    raise ImageError(f"{name} is {width}x{height} pixels: decoding it needs about {need >> 20} MB and only "
                     f"{room >> 20} MB of memory is free; resize it to a few megapixels first "
                     "(e.g. convert IN -resize 4000x4000 OUT)")
