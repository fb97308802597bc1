"""Where files live: local paths and object-store URIs (``s3://``, ``gs://``) behind one small
path API, so the layout, the sinks, the commit and the manifest loader read and write either.

``as_path(p)`` gives a ``pathlib.Path`` for a local path (or ``file://`` URI) and a
``UriPath`` for a remote URI. ``UriPath`` has the subset of ``Path`` the output layout uses
(``/``, ``name``, ``parent``, ``exists``, ``is_dir``, ``iterdir``, ``glob``, ``read_text``,
``write_text``, ...) over ``pyarrow.fs``: S3 and GCS are pyarrow's own file systems (no
extra package); any other scheme goes through fsspec (``pyarrow.fs.FSSpecHandler``) when a
package registers it (``memory://`` for tests, ``az://`` with adlfs, ...).

Credentials and endpoints come from the environment, as every AWS/GCP client reads them:
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``
(pyarrow's AWS SDK chain), ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, and
``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` for an S3-compatible server (MinIO, moto,
Ceph: path-style addressing); GCS: Google's default credentials
(``GOOGLE_APPLICATION_CREDENTIALS``, the metadata server on GCP) and ``STORAGE_EMULATOR_HOST``
for an emulator.

Object stores have no folders and no rename: ``mkdir`` does nothing, a "folder" exists while
an object has its prefix, and a move is copy + delete (``transforms/io/commit.py`` builds its
commit on object stores on that, see there). One object written with one PUT is atomic: a
reader sees the old object or the new one, never part of one. Deletions go through fsspec's
s3fs / gcsfs when installed (the ``[remote]`` extra): pyarrow's own delete leaves an empty
folder-marker object (``prefix/``) behind, which pandas over s3fs then fails to open.

A remote URI is normalised once (``.`` and ``..`` segments and repeated ``/`` collapsed, no
trailing ``/``): ``s3://b/rec/../x`` is ``s3://b/x``, which is what the allowed-roots check
compares (``UriPath.is_relative_to``, at ``/`` boundaries: ``s3://b/rec-2`` is not inside
``s3://b/rec``). Keys are used as written (no percent-decoding).
"""

from __future__ import annotations

import fnmatch
import logging
import os
import posixpath
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.S)
NATIVE = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}   # pyarrow's own file systems
AnyPath = "Path | UriPath"


class RemoteError(OSError):
    """A remote URI that cannot be used (unknown scheme, no bucket); the message says why."""


def is_remote(p) -> bool:
    """Whether ``p`` names an object store (a ``scheme://`` URI other than ``file://``)."""
    if isinstance(p, UriPath):
        return True
    if isinstance(p, Path) or not isinstance(p, str):
        return False
    m = _URI.match(p)
    return bool(m) and m.group(1).lower() != "file"


def as_path(p) -> Path | UriPath:
    """``p`` (str, Path, UriPath, ``file://`` URI) as a ``Path`` (local) or ``UriPath``."""
    if isinstance(p, (Path, UriPath)):
        return p
    s = os.fspath(p)
    if is_remote(s):
        return UriPath(s)
    if s.lower().startswith("file://"):
        return Path(urlsplit(s).path)
    return Path(s)


# ---------------------------------------------------------------- file systems

_FILESYSTEMS: dict[str, pafs.FileSystem] = {}
_LOCK = threading.Lock()


def _s3() -> pafs.FileSystem:
    kw: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kw |= {"endpoint_override": u.netloc, "scheme": u.scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    return pafs.S3FileSystem(**kw)


def _gcs() -> pafs.FileSystem:
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        u = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=u.netloc,
                                  scheme=u.scheme or "http")
    return pafs.GcsFileSystem()


def _fsspec(scheme: str) -> pafs.FileSystem:
    try:
        import fsspec  # lazy: only for schemes pyarrow has no file system of its own for
    except ImportError:
        raise RemoteError(f"{scheme}:// needs fsspec and the package for {scheme}; "
                          f"pyarrow itself reads s3:// and gs://") from None
    try:
        return pafs.PyFileSystem(pafs.FSSpecHandler(fsspec.filesystem(scheme)))
    except (ValueError, ImportError) as e:
        raise RemoteError(f"no file system for {scheme}:// ({e}); install the fsspec "
                          f"package for it") from None


def filesystem(scheme: str) -> pafs.FileSystem:
    """The (per-process, cached) pyarrow file system of a URI scheme."""
    scheme = NATIVE.get(scheme.lower(), scheme.lower())
    with _LOCK:
        fs = _FILESYSTEMS.get(scheme)
        if fs is None:
            fs = {"s3": _s3, "gs": _gcs}.get(scheme, lambda: _fsspec(scheme))()
            _FILESYSTEMS[scheme] = fs
        return fs


def reset_filesystems() -> None:
    """Forget the cached file systems (after the environment's endpoint or keys changed)."""
    with _LOCK:
        _FILESYSTEMS.clear()
        _DELETERS.clear()


_DELETERS: dict[str, object] = {}
_FSSPEC_NAME = {"s3": "s3", "gs": "gcs"}
_log = logging.getLogger(__name__)


def _deleter(scheme: str):
    """fsspec's file system for deleting on a native scheme (s3fs, gcsfs), or None (pyarrow
    deletes, leaving folder markers; a warning says so once)."""
    native = NATIVE.get(scheme.lower())
    if native is None:
        return None                 # an fsspec scheme: pyarrow goes through fsspec already
    with _LOCK:
        if native not in _DELETERS:
            try:
                import fsspec  # lazy: the [remote] extra (s3fs, gcsfs)

                kw = {"token": "anon"} if native == "gs" and \
                    os.environ.get("STORAGE_EMULATOR_HOST") else {}
                _DELETERS[native] = fsspec.filesystem(_FSSPEC_NAME[native], **kw)
            except (ImportError, ValueError):
                _DELETERS[native] = None
                _log.warning("%s:// deletions leave empty folder markers without fsspec's %s "
                             "(pip install 'mmalign[remote]'); pandas over s3fs fails on them",
                             native, "s3fs" if native == "s3" else "gcsfs")
        return _DELETERS[native]


# ---------------------------------------------------------------- UriPath


@dataclass(frozen=True)
class Stat:
    st_size: int
    st_mtime: float


class UriPath:
    """A remote object or prefix, ``scheme://bucket/key``, with the ``Path`` methods the
    output layout uses (see the module docstring). Comparable and hashable by its URI."""

    __slots__ = ("scheme", "bucket", "key", "_type")

    def __init__(self, uri: str, _type: pafs.FileType | None = None):
        m = _URI.match(str(uri))
        if not m:
            raise RemoteError(f"{uri!r} is not a scheme://bucket/key URI")
        scheme, rest = m.group(1).lower(), m.group(2)
        bucket, _, key = rest.partition("/")
        if not bucket or bucket in (".", ".."):
            raise RemoteError(f"{uri!r} names no bucket; write {scheme}://BUCKET/path")
        key = posixpath.normpath("/" + key).lstrip("/") if key.strip("/") else ""
        self.scheme, self.bucket, self.key = scheme, bucket, key
        self._type = _type

    # -------------------------------------------------------- pure path

    def __str__(self) -> str:
        return f"{self.scheme}://{self.bucket}/{self.key}" if self.key else \
            f"{self.scheme}://{self.bucket}"

    def __repr__(self) -> str:
        return f"UriPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UriPath) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other) -> bool:
        return str(self) < str(other)

    def __truediv__(self, part) -> UriPath:
        part = str(part)
        if is_remote(part):
            return UriPath(part)
        return UriPath(f"{self.scheme}://{self.bucket}/{self.key}/{part}")

    def joinpath(self, *parts) -> UriPath:
        out = self
        for p in parts:
            out = out / p
        return out

    @property
    def name(self) -> str:
        return self.key.rpartition("/")[2]

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> UriPath:
        return UriPath(f"{self.scheme}://{self.bucket}/{self.key.rpartition('/')[0]}")

    @property
    def parents(self) -> list[UriPath]:
        out, p = [], self
        while p.key:
            p = p.parent
            out.append(p)
        return out

    def with_name(self, name: str) -> UriPath:
        return self.parent / name

    def is_absolute(self) -> bool:
        return True

    def resolve(self) -> UriPath:
        """The URI itself (normalised already; object stores have no symlinks)."""
        return self

    def as_posix(self) -> str:
        return str(self)

    def is_relative_to(self, other) -> bool:
        """Inside ``other`` (or equal to it), at ``/`` boundaries."""
        if not isinstance(other, UriPath):
            return False
        if (NATIVE.get(self.scheme, self.scheme), self.bucket) != \
                (NATIVE.get(other.scheme, other.scheme), other.bucket):
            return False
        return not other.key or self.key == other.key or self.key.startswith(other.key + "/")

    def relative_to(self, other: UriPath) -> str:
        if not self.is_relative_to(other):
            raise ValueError(f"{self} is not inside {other}")
        return self.key[len(other.key):].lstrip("/")

    # -------------------------------------------------------- file system

    @property
    def fs(self) -> pafs.FileSystem:
        return filesystem(self.scheme)

    @property
    def fs_path(self) -> str:
        """The path the pyarrow file system takes: ``bucket/key``."""
        if NATIVE.get(self.scheme):
            return f"{self.bucket}/{self.key}".rstrip("/")
        return str(self)            # fsspec file systems take the whole URI

    def info(self) -> pafs.FileInfo:
        return self.fs.get_file_info(self.fs_path)

    def _kind(self) -> pafs.FileType:
        return self._type if self._type is not None else self.info().type

    def exists(self) -> bool:
        return self._kind() != pafs.FileType.NotFound

    def is_file(self) -> bool:
        return self._kind() == pafs.FileType.File

    def is_dir(self) -> bool:
        return self._kind() == pafs.FileType.Directory

    def stat(self) -> Stat:
        i = self.info()
        if i.type == pafs.FileType.NotFound:
            raise FileNotFoundError(str(self))
        return Stat(int(i.size or 0), i.mtime.timestamp() if i.mtime else 0.0)

    def _list(self, recursive: bool) -> list[pafs.FileInfo]:
        sel = pafs.FileSelector(self.fs_path, allow_not_found=True, recursive=recursive)
        try:
            return self.fs.get_file_info(sel)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _child(self, info: pafs.FileInfo) -> UriPath:
        base = f"{self.bucket}/{self.key}".rstrip("/")
        at = info.path.find(base)
        rel = info.path[at + len(base):] if at >= 0 else info.path.rpartition("/")[2]
        return UriPath(f"{self}/{rel.strip('/')}", info.type)

    def iterdir(self) -> Iterator[UriPath]:
        """The direct children (objects and prefixes), from one listing of everything below
        (stores and their emulators differ in how they list prefixes one level down; every one
        lists objects)."""
        kinds: dict[str, pafs.FileType] = {}
        base = f"{self.bucket}/{self.key}".rstrip("/")
        for info in self._list(recursive=True):
            at = info.path.find(base)
            rel = (info.path[at + len(base):] if at >= 0 else info.path).strip("/")
            if not rel:
                continue
            first, deeper, _ = rel.partition("/")
            if deeper or info.type == pafs.FileType.Directory:
                kinds[first] = pafs.FileType.Directory
            else:
                kinds.setdefault(first, info.type)
        for name, kind in sorted(kinds.items()):
            yield UriPath(f"{self}/{name}", kind)

    def walk_files(self) -> Iterator[UriPath]:
        """Every object under this prefix (recursively)."""
        for info in self._list(recursive=True):
            if info.type == pafs.FileType.File:
                yield self._child(info)

    def glob(self, pattern: str) -> Iterator[UriPath]:
        """Children whose name matches ``pattern`` (one level: no ``/`` or ``**``)."""
        if "/" in pattern:
            raise ValueError(f"UriPath.glob takes a name pattern, not {pattern!r}")
        return (p for p in self.iterdir() if fnmatch.fnmatchcase(p.name, pattern))

    def open(self, mode: str = "rb"):
        if mode == "rb":
            return self.fs.open_input_file(self.fs_path)
        if mode == "wb":
            return self.fs.open_output_stream(self.fs_path)
        raise ValueError(f"UriPath.open: mode {mode!r} (only 'rb', 'wb')")

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.fs_path) as f:
            return f.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        with self.fs.open_output_stream(self.fs_path) as f:
            f.write(data)
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def touch(self, exist_ok: bool = True) -> None:
        self.write_bytes(b"")

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing: object stores have no folders (a prefix exists while it has objects)."""

    def rmdir(self) -> None:
        """Nothing: an empty prefix does not exist."""

    def unlink(self, missing_ok: bool = False) -> None:
        deleter = _deleter(self.scheme)
        if deleter is not None:
            if not missing_ok and not self.exists():
                raise FileNotFoundError(str(self))
            deleter.rm_file(self.fs_path)
            return
        try:
            self.fs.delete_file(self.fs_path)
        except FileNotFoundError:
            if not missing_ok:
                raise


# ---------------------------------------------------------------- helpers over both kinds


def rmtree(p) -> None:
    """Remove a folder (local) or every object under a prefix (remote); missing is fine."""
    p = as_path(p)
    if isinstance(p, UriPath):
        deleter = _deleter(p.scheme)
        try:
            if deleter is not None:
                deleter.invalidate_cache()
                deleter.rm(p.fs_path, recursive=True)
            else:
                p.fs.delete_dir(p.fs_path)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(p, ignore_errors=True)


def copy_file(src, dest) -> None:
    """Copy one file (a server-side copy within one object store)."""
    src, dest = as_path(src), as_path(dest)
    if isinstance(src, UriPath) and isinstance(dest, UriPath) and src.fs is dest.fs:
        src.fs.copy_file(src.fs_path, dest.fs_path)
    elif isinstance(src, Path) and isinstance(dest, Path):
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
    else:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())


def copytree(src, dest) -> None:
    """Copy every file under ``src`` to the same relative place under ``dest``."""
    src, dest = as_path(src), as_path(dest)
    if isinstance(src, Path) and isinstance(dest, Path):
        shutil.copytree(src, dest)
        return
    for f in files_under(src):
        copy_file(f, dest / _relative(f, src))


def files_under(root) -> list:
    """Every file below ``root`` (recursively), sorted."""
    root = as_path(root)
    if isinstance(root, UriPath):
        return sorted(root.walk_files())
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _relative(p, root) -> str:
    return p.relative_to(root) if isinstance(p, UriPath) else str(p.relative_to(root))


def read_table(path, **kw) -> pa.Table:
    """A Parquet file (local or remote) as a table."""
    p = as_path(path)
    if isinstance(p, UriPath):
        return pq.read_table(p.fs_path, filesystem=p.fs, **kw)
    return pq.read_table(p, **kw)


def read_schema(path) -> pa.Schema:
    """A Parquet file's schema (its footer only)."""
    p = as_path(path)
    if isinstance(p, UriPath):
        with p.open("rb") as f:
            return pq.read_schema(f)
    return pq.read_schema(p)


def write_table(table: pa.Table, path, **kw) -> None:
    """``pq.write_table`` to a local path or a remote object (one PUT: atomic for readers)."""
    p = as_path(path)
    if isinstance(p, UriPath):
        pq.write_table(table, p.fs_path, filesystem=p.fs, **kw)
    else:
        pq.write_table(table, p, **kw)
