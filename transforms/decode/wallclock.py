"""Wall-clock time: when (in UTC) a session's reference time 0 happened.

Precedence, first that applies:

1. ``start_time: <ISO 8601 with a zone>`` in the manifest: that instant;
2. ``start_time: container``: the reference stream's first file's container ``creation_time``
   (MP4/MOV ``mvhd``, what cameras write; an error if the file has none);
3. ``start_time: file_mtime``: the reference stream's first file's modification time (an
   explicit last resort: copies and downloads change it);
4. no ``start_time``: the reference stream's container ``creation_time`` if it has one, else
   unknown.

The reference stream is the tick anchor, else the first stream on the reference clock (no
calibration entry, no DTW-sync). With a known start, ``tick_time`` = start + ``tick_ns``
(``tick_ns`` stays the session's own reference time); without one, ``tick_time`` is
``tick_ns`` read as UTC when it is an epoch time already (at or after 2000-01-01), else null.
"""

from __future__ import annotations

import os
from pathlib import Path

import av

from mmalign.schemas.errors import ManifestError
from mmalign.schemas.manifest import Manifest, parse_utc_ns

EPOCH_2000_NS = 946_684_800 * 1_000_000_000     # below this a time is not a wall-clock time


def container_creation_ns(path: str | Path) -> int | None:
    """The container's ``creation_time`` (ns since 1970, UTC), or None (no such tag)."""
    try:
        with av.open(str(path)) as c:
            tags = [c.metadata, *(s.metadata for s in c.streams)]
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return None
    for tag in tags:
        text = (tag or {}).get("creation_time")
        if text:
            try:
                ns = parse_utc_ns(text)
            except ValueError:
                continue
            if ns > 0:              # an unset mvhd time reads as 1904 or 1970: not a time
                return ns
    return None


def reference_stream(manifest: Manifest, declared: dict | None = None):
    """The stream whose clock is the session's reference (see the module docstring)."""
    anchor = manifest.alignment.ticks.anchor
    if anchor:
        return manifest.stream(anchor)
    for s in manifest.streams:
        model = (declared or {}).get((manifest.session, s.id))
        if s.sync is None and (model is None or model.is_identity):
            return s
    return manifest.streams[0]


def session_start_ns(manifest: Manifest, declared: dict | None = None
                     ) -> tuple[int | None, str]:
    """(UTC ns of reference time 0 or None, where it came from)."""
    how = manifest.start_time
    if how not in (None, "container", "file_mtime"):
        return parse_utc_ns(how), "manifest"
    ref = reference_stream(manifest, declared)
    first = manifest.resolve(ref.paths[0], f"streams[{ref.id}].files[0]")
    if how == "file_mtime":
        return os.stat(first).st_mtime_ns, f"file_mtime of {first.name}"
    created = container_creation_ns(first) if ref.modality in ("video", "audio") else None
    if created is None and how == "container":
        raise ManifestError(f"field 'start_time': container: {first} (stream {ref.id!r}) has "
                            f"no creation_time; give start_time as an ISO 8601 time instead")
    return created, ("container creation_time" if created is not None else "unknown")
