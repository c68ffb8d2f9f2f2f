"""The store on object storage (S3 and the like): opening a root, and whole-object writes.

An object store has no rename and no directories. An object appears whole when its
upload completes — one PUT, or the completion of a multipart upload — and not
before, and a PUT over an existing key replaces it whole. So on such a filesystem
(:func:`is_object_store`) the store:

* encodes each file in memory and uploads it under its final name in one go
  (:func:`put_whole`): every reader, perfnb's or a raw glob over the bucket, sees
  the whole file or nothing. A process killed mid-upload leaves nothing under the
  name (at most an incomplete multipart upload for files past ~10 MB, which no
  listing shows; a bucket lifecycle rule that aborts incomplete multipart uploads
  reclaims their space);
* creates no directory markers; a day whose files retention deleted may keep the
  zero-byte marker pyarrow leaves behind, and readers ignore it;
* keeps the append log on the local disk (:func:`default_wal_dir`), since an
  acknowledgement is a memory copy into a mapped local file.

Reads list the bucket and take what the listing shows; a file deleted since (by a
compaction or retention) makes them list the day again. A compaction is the one
change of several objects: perfnb's readers follow its intent, which is uploaded
before the merged file, so they rely on a listing showing an object once its
upload returned, as AWS S3, MinIO and moto do. A raw glob over the bucket that
lists a day between the merged file's upload and the deletes of the files it
replaces counts that day twice.

``s3://bucket/prefix`` roots are opened here (:func:`open_uri`) rather than by
``pyarrow.fs.FileSystem.from_uri``, for one setting it cannot take: uploads that
start only when the stream closes (``allow_delayed_open``), so a file under ~10 MB is
one PUT rather than three requests. Credentials come the usual way (environment
variables, ``~/.aws`` profiles, instance roles); the endpoint from
``storage_options``, the URI's ``?endpoint_override=``, or ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``.

>>> fs, path, endpoint = open_uri("s3://bucket/perfnb?endpoint_override=127.0.0.1:9000")
>>> fs.type_name, path, endpoint, is_object_store(fs)
('s3', 'bucket/perfnb', '127.0.0.1:9000', True)
"""

from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from perfnb.errors import StoreError

__all__ = [
    "OBJECT_STORES",
    "claim_wal_dir",
    "days_with_files",
    "default_wal_dir",
    "is_object_store",
    "listing_by_day",
    "open_uri",
    "parquet_bytes",
    "put_whole",
]

#: pyarrow filesystem types that are object stores (no rename, no directories).
OBJECT_STORES: Final = frozenset({"s3", "gcs", "abfs"})

#: The file in an append-log folder naming the store it belongs to.
_MARK: Final = "STORE"

#: Options an ``s3://`` URI may carry after ``?``.
_QUERY_OPTIONS: Final = ("region", "scheme", "endpoint_override")


def is_object_store(fs: pafs.FileSystem) -> bool:
    """Whether ``fs`` keeps objects rather than files (see the module doc)."""
    return fs.type_name in OBJECT_STORES


def _endpoint(url: str, *, name: str) -> tuple[str, str]:
    """``(host:port, scheme)`` of an endpoint URL such as ``http://127.0.0.1:9000``."""
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise StoreError(f"{name}: got {url!r}; expected a URL such as http://127.0.0.1:9000")
    return parts.netloc, parts.scheme


def _s3_options(
    uri: str, storage_options: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str, str]:
    """The S3FileSystem options of an ``s3://`` URI, its path, and the endpoint (or "")."""
    parts = urlsplit(uri)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if not bucket or "@" in bucket:
        raise StoreError(
            f"root: got {uri!r}; expected s3://bucket/prefix (credentials come from the"
            " environment or a profile, never from the URI)"
        )
    options: dict[str, Any] = {"allow_delayed_open": True}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _QUERY_OPTIONS:
            raise StoreError(
                f"root: unknown option {key!r} in {uri!r}; accepted: {', '.join(_QUERY_OPTIONS)}"
            )
        options[key] = value
    for key, value in (storage_options or {}).items():
        if key == "endpoint_url":
            options["endpoint_override"], options["scheme"] = _endpoint(
                str(value), name="storage_options['endpoint_url']"
            )
        else:
            options[key] = value
    if not options.get("endpoint_override"):
        from_env = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if from_env:
            netloc, scheme = _endpoint(from_env, name="AWS_ENDPOINT_URL")
            options["endpoint_override"] = netloc
            options.setdefault("scheme", scheme)
    endpoint = str(options.get("endpoint_override") or "")
    if not endpoint and not options.get("region"):
        # AWS itself: requests must go to the bucket's own region.
        try:
            options["region"] = pafs.resolve_s3_region(bucket)
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"root: cannot find the region of bucket {bucket!r}: {exc}") from exc
    path = f"{bucket}/{prefix}" if prefix else bucket
    return options, path, endpoint


def open_uri(
    uri: str, storage_options: Mapping[str, Any] | None = None
) -> tuple[pafs.FileSystem, str, str]:
    """The filesystem and path of a store root given as a URI, and its endpoint ("" if none).

    ``s3://`` roots take ``storage_options`` (keyword arguments of
    :class:`pyarrow.fs.S3FileSystem`, plus ``endpoint_url``, a URL such as
    ``http://127.0.0.1:9000``); other schemes go to pyarrow's ``from_uri``.
    Raises :class:`~perfnb.errors.StoreError` naming what is wrong.
    """
    scheme = uri.partition("://")[0].lower()
    if scheme == "s3":
        options, path, endpoint = _s3_options(uri, storage_options)
        try:
            return pafs.S3FileSystem(**options), path, endpoint
        except TypeError as exc:
            raise StoreError(
                f"storage_options: {exc}; accepted: the keyword arguments of"
                " pyarrow.fs.S3FileSystem, and endpoint_url"
            ) from None
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"root: cannot open {uri!r}: {exc}") from exc
    if storage_options:
        raise StoreError(
            f"storage_options: only s3:// roots take them, got {uri!r}; pass filesystem="
            " a pyarrow filesystem instead"
        )
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StoreError(f"root: cannot open {uri!r}: {exc}") from exc
    return filesystem, path, ""


def default_wal_dir(fs: pafs.FileSystem, root: str, *, endpoint: str = "") -> Path:
    """Where the append log of a store that is not on the local disk lives by default.

    ``$XDG_CACHE_HOME/perfnb/wal/<key>`` (``~/.cache`` without the variable), the key
    a hash of the filesystem type, the endpoint and the root, so each store on each
    endpoint has its own log and a restarted writer finds what it left.
    """
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    name = f"{fs.type_name}:{root}" if not endpoint else f"{fs.type_name}:{endpoint}:{root}"
    key = hashlib.sha256(name.encode()).hexdigest()
    return cache / "perfnb" / "wal" / key[:16]


def claim_wal_dir(directory: Path, owner: str) -> None:
    """Mark ``directory`` as the append log of the store ``owner``; refuse another store's.

    A log replays into whichever store opens it, so two stores must never share one.
    The mark is a file ``STORE`` holding ``owner``, created atomically.
    """
    directory.mkdir(parents=True, exist_ok=True)
    mark = directory / _MARK
    temp = directory / f".{_MARK}.{os.getpid()}.{secrets.token_hex(3)}"
    try:
        temp.write_text(owner)
        try:
            os.link(temp, mark)  # never replaces: the first store to claim the folder keeps it
            return
        except FileExistsError:
            pass
    finally:
        temp.unlink(missing_ok=True)
    found = mark.read_text()
    if found != owner:
        raise StoreError(
            f"wal_dir: {str(directory)!r} holds the append log of another store ({found!r},"
            f" not {owner!r}); give each store a wal_dir of its own"
        )


def listing_by_day(fs: pafs.FileSystem, base: str) -> dict[date, list[pafs.FileInfo]]:
    """Every file under ``base``'s ``date=YYYY-MM-DD`` prefixes, by day, from one listing.

    One listing of every key under ``base`` (a request per thousand keys) instead of
    one per day. A prefix with only a directory marker left (its files deleted) is
    not a day.
    """
    selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
    out: dict[date, list[pafs.FileInfo]] = {}
    for info in fs.get_file_info(selector):
        if info.type != pafs.FileType.File:
            continue
        folder = info.path[len(base) + 1 :].split("/")
        if len(folder) != 2 or not folder[0].startswith("date="):
            continue
        try:
            day = date.fromisoformat(folder[0][5:])
        except ValueError:
            continue
        out.setdefault(day, []).append(info)
    return out


def days_with_files(fs: pafs.FileSystem, base: str, *, name: str | None = None) -> list[date]:
    """The days under ``base`` (``date=YYYY-MM-DD`` prefixes) holding a data file, in order.

    ``name`` keeps only files of that name. See :func:`listing_by_day`.
    """
    return sorted(
        day
        for day, infos in listing_by_day(fs, base).items()
        if any(_is_data(info, name) for info in infos)
    )


def _is_data(info: pafs.FileInfo, name: str | None) -> bool:
    if name is not None and info.base_name != name:
        return False
    return bool(info.base_name.endswith(".parquet") and info.base_name[0] not in "._")


def parquet_bytes(table: pa.Table, **options: Any) -> pa.Buffer:
    """``table`` encoded as one Parquet file in memory (``options`` as for ``write_table``)."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue()


def put_whole(fs: pafs.FileSystem, path: str, data: bytes | pa.Buffer, *, fresh: bool) -> None:
    """Upload ``data`` as the object ``path`` in one go; raises ``OSError`` if it failed.

    ``fresh`` says that no object was under ``path`` before (the caller checked, and
    names are unique). pyarrow completes an upload when its stream is dropped, even
    after a failure, which could publish the part already sent; for a fresh name
    such a torn object is deleted before the error is raised. Objects that replace
    others (summaries, indexes, intents) stay under the size of one part, which
    pyarrow sends only as a whole.
    """
    size = len(data)
    try:
        stream = fs.open_output_stream(path)
        stream.write(data)
        stream.close()
    except (OSError, pa.ArrowException):
        stream = None  # its destructor finishes whatever upload was under way
        if fresh:
            _drop_torn(fs, path, size)
        raise


def _drop_torn(fs: pafs.FileSystem, path: str, size: int) -> None:
    try:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File and info.size != size:
            fs.delete_file(path)
    except OSError:
        return
