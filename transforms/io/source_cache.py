"""Remote source files on local disk, for the decoders that need a local file (PyAV, soundfile,
image sequences, the line readers): downloaded once per worker machine, kept while the object
is unchanged.

    <cache>/objects/<scheme>/<bucket>/<key>    the object's bytes, at a path mirroring its URI
    <cache>/stamps/<sha256(uri)>.json          {uri, etag, size, mtime} of that copy
    <cache>/locks/<sha256(uri)>.lock           one download of an object at a time (flock)

``<cache>`` is ``$MMALIGN_SOURCE_CACHE`` or ``<tmp>/mmalign-sources-<uid>``: every worker
process of a machine shares it, and a download is one HEAD (the etag, size and mtime the
copy is keyed by) plus the GETs, done by one process while the others wait for it. A copy
whose stamp still matches the object is used without a download; a changed object (another
etag, size or mtime) is downloaded again over it (atomically: a reader of the old copy keeps
its open file).

The mirror keeps a file's neighbours where the decoder looks for them (an image sequence's
images next to its index), and it keeps the allowed-roots rule: a root ``s3://b/rec`` is the
folder ``<cache>/objects/s3/b/rec`` for the decoder, ``fetch`` refuses an object outside the
remote roots before reading a byte, and ``uris`` turns the cache paths a decoder wrote into
messages back into URIs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from pathlib import Path

from mmalign.schemas.fs import UriPath, as_path

CHUNK_BYTES = 8 << 20


class OutsideRoots(PermissionError):
    """A remote object outside every allowed root prefix (never downloaded)."""


class SourceCache:
    """A local mirror of remote source objects (module docstring)."""

    def __init__(self, root: str | Path | None = None):
        root = root or os.environ.get("MMALIGN_SOURCE_CACHE") or \
            Path(tempfile.gettempdir()) / f"mmalign-sources-{os.getuid()}"
        self.root = Path(root).resolve()
        self.objects = self.root / "objects"
        self.downloads = 0          # objects downloaded by this process (tests, logs)
        self.hits = 0               # fetches served from a matching copy
        self._uri_re = re.compile(re.escape(str(self.objects)) + r"/([a-z][a-z0-9+.-]*)/"
                                  r"([^/\s'\"\]]+)")

    # ------------------------------------------------------------ paths

    def local_path(self, uri: str | UriPath) -> Path:
        """Where the copy of ``uri`` lives (whether or not it was fetched)."""
        u = as_path(uri)
        if not isinstance(u, UriPath):
            raise ValueError(f"{uri} is not a remote URI")
        return self.objects.joinpath(u.scheme, u.bucket, *[k for k in u.key.split("/") if k])

    def local_roots(self, roots) -> tuple[str, ...]:
        """The allowed roots as the decoder sees them: URI prefixes as their mirror folders,
        local folders unchanged."""
        return tuple(str(self.local_path(r)) if isinstance(as_path(r), UriPath) else str(r)
                     for r in roots)

    def uri_of(self, local: str | Path) -> str | None:
        """The URI a mirror path stands for (None: not a path in this cache)."""
        p = Path(local)
        try:
            rel = p.relative_to(self.objects)
        except ValueError:
            return None
        parts = rel.parts
        if len(parts) < 2:
            return None
        return str(UriPath(f"{parts[0]}://{'/'.join(parts[1:])}"))

    def uris(self, text: str) -> str:
        """``text`` with every mirror path written back as its URI."""
        return self._uri_re.sub(r"\1://\2", text) if str(self.objects) in text else text

    # ------------------------------------------------------------ fetching

    def fetch(self, uri: str | UriPath, roots=()) -> Path:
        """The local copy of the remote file ``uri``, downloaded if there is none or the object
        changed. ``roots`` (URIs or local folders; empty = anywhere): ``OutsideRoots`` when
        the object lies under none of them. ``FileNotFoundError`` when it does not exist;
        other ``OSError``s (network, permissions) propagate, so the runner retries."""
        u = as_path(uri)
        if not isinstance(u, UriPath):
            raise ValueError(f"{uri} is not a remote URI")
        remote_roots = [r for r in map(as_path, roots) if isinstance(r, UriPath)]
        if roots and not any(u.is_relative_to(r) for r in remote_roots):
            raise OutsideRoots(f"{u} is outside the allowed roots {[str(r) for r in roots]}")
        local = self.local_path(u)
        key = hashlib.sha256(str(u).encode()).hexdigest()
        stamp_file = self.root / "stamps" / f"{key}.json"
        with u.open("rb") as f:                  # one HEAD: what the copy is keyed by
            stamp = _stamp(u, f)
            if self._matches(local, stamp_file, stamp):
                self.hits += 1
                return local
            lock = self.root / "locks" / f"{key}.lock"
            lock.parent.mkdir(parents=True, exist_ok=True)
            with open(lock, "w") as lf:
                fcntl.flock(lf, fcntl.LOCK_EX)
                try:
                    if self._matches(local, stamp_file, stamp):   # another process did it
                        self.hits += 1
                        return local
                    self._download(f, local)
                    stamp_file.parent.mkdir(parents=True, exist_ok=True)
                    tmp = stamp_file.with_name(f".{stamp_file.name}.{os.getpid()}.tmp")
                    tmp.write_text(json.dumps(stamp, sort_keys=True))
                    os.replace(tmp, stamp_file)
                    self.downloads += 1
                finally:
                    fcntl.flock(lf, fcntl.LOCK_UN)
        return local

    @staticmethod
    def _matches(local: Path, stamp_file: Path, stamp: dict) -> bool:
        try:
            return local.is_file() and json.loads(stamp_file.read_text()) == stamp and \
                local.stat().st_size == stamp["size"]
        except (OSError, ValueError):
            return False

    @staticmethod
    def _download(f, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{local.name}.", suffix=".part", dir=local.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                f.seek(0)
                while True:
                    block = f.read(CHUNK_BYTES)
                    if not block:
                        break
                    out.write(block)
            os.replace(tmp, local)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _stamp(u: UriPath, f) -> dict:
    """{uri, etag, size, mtime} of an open remote file (etag and mtime from the object's
    headers where the store gives them, else from a listing)."""
    meta = {}
    try:
        meta = {k.lower(): (v.decode() if isinstance(v, bytes) else str(v))
                for k, v in (f.metadata() or {}).items()}
    except (OSError, AttributeError):
        pass
    etag = meta.get("etag", "")
    mtime = meta.get("last-modified", "")
    if not etag and not mtime:
        info = u.info()
        mtime = info.mtime.isoformat() if info.mtime else ""
    return {"uri": str(u), "etag": etag, "size": int(f.size()), "mtime": mtime}


_DEFAULT: SourceCache | None = None
_LOCK = threading.Lock()


def default_cache() -> SourceCache:
    """The process's cache (``$MMALIGN_SOURCE_CACHE`` read at first use)."""
    global _DEFAULT
    with _LOCK:
        if _DEFAULT is None or (os.environ.get("MMALIGN_SOURCE_CACHE") and
                                Path(os.environ["MMALIGN_SOURCE_CACHE"]).resolve()
                                != _DEFAULT.root):
            _DEFAULT = SourceCache()
        return _DEFAULT
