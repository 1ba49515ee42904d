"""How much memory this process may still take, so a picture too large to decode is refused in one line.

On a small board (a 512 MB Pi Zero) or in a container with a memory limit, decoding a 100-megapixel
panorama does not fail: the allocation succeeds and the kernel kills the process when the pages are
touched. Measured here: decoding takes about 2.1x the decoded picture at its peak (the decoder's output
and its RGB copy); ``DECODE_PEAK`` keeps a little more.
"""
from __future__ import annotations

from pathlib import Path

DECODE_PEAK = 2.3  # peak memory of decode + colour conversion, in decoded pictures (measured 2.03 JPEG, 2.18 PNG)
CHECK_ABOVE = 32 << 20  # pictures decoding to less than this (about 11 megapixels) are not checked


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
    """Limit minus usage (less the reclaimable file cache) of this process's memory cgroup, the tightest ancestor."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        hid, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if "memory" in controllers.split(","):  # cgroup v1
            return _v1_room(Path("/sys/fs/cgroup/memory") / path.lstrip("/"))
    for line in lines:
        if line.startswith("0::"):  # cgroup v2
            return _v2_room(Path("/sys/fs/cgroup") / line[3:].lstrip("/"))
    return None


def _stat(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def _v1_room(group: Path) -> int | None:
    try:
        stat = _stat(group / "memory.stat")
        limit = stat.get("hierarchical_memory_limit") or int((group / "memory.limit_in_bytes").read_text())
        usage = int((group / "memory.usage_in_bytes").read_text())
    except (OSError, ValueError):
        return None
    if limit >= 1 << 60:  # "no limit" is the largest page-aligned 64-bit number
        return None
    return max(0, limit - usage + stat.get("total_inactive_file", stat.get("inactive_file", 0)))


def _v2_room(group: Path) -> int | None:
    room = None
    root = Path("/sys/fs/cgroup")
    while True:
        try:
            limit = (group / "memory.max").read_text().strip()
            if limit != "max":
                usage = int((group / "memory.current").read_text())
                free = int(limit) - usage + _stat(group / "memory.stat").get("inactive_file", 0)
                room = max(0, free) if room is None else min(room, max(0, free))
        except (OSError, ValueError):
            pass
        if group == root or group.parent == group:
            return room
        group = group.parent


def check_decode(name: str, width: int, height: int, reduction: int = 1) -> None:
    """Raise ImageError when decoding a ``width`` x ``height`` picture (at 1/``reduction``) needs more memory than
    is left; no-op for ordinary pictures and where the available memory cannot be read."""
    decoded = (width // reduction) * (height // reduction) * 3
    if decoded < CHECK_ABOVE:
        return
    need, room = int(decoded * DECODE_PEAK), available_bytes()
    if room is None or need <= room:
        return
    from .errors import ImageError  # noqa: PLC0415

    raise ImageError(f"{name} is {width}x{height} pixels: decoding it needs about {need >> 20} MB and only "
                     f"{room >> 20} MB of memory is free; resize it to a few megapixels first "
                     "(e.g. convert IN -resize 4000x4000 OUT)")

