"""Object storage through fsspec: ``s3://bucket/prefix`` -> a filesystem and the paths in it.

Only a location given as a URI is remote (:func:`is_remote`); a local folder is a ``Path``. The
location helpers (:func:`join`, :func:`relative`, :func:`exists`, :func:`open_input`) take either; only a URI ever reaches fsspec, so the
local lake imports neither fsspec nor s3fs. The filesystem is s3fs
(fsspec's S3 implementation), the same object for every use: pyarrow reads Parquet through it,
DuckDB reads the lake views through it (``con.register_filesystem``), soundfile reads the FLACs
through it, and the day lock writes its lock objects with it. Endpoint and credentials come from
the standard AWS chain (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``~/.aws``, instance roles) or fsspec's own config (``FSSPEC_S3_*``); nothing here reads, logs or
stores a credential.

Object stores have no rename. An object appears whole or not at all (a single PUT, or a multipart
upload completed in one call), so a file is published by writing it locally and uploading it in one
go (:func:`put_file`): a reader sees the old object or the new one, never half of one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from emo_assets.lib.files.faults import MachineFault

# scheme -> the package that serves it (pip install -e '.[cluster]')
SCHEMES = {"s3": "s3fs"}
SETTING = "EMO_LAKE_URI"


class ObjectStoreError(MachineFault):
    """The object store did not answer or refused a request: the infrastructure's fault, never a file's."""


def is_remote(location: object) -> bool:
    """True for a URI (``s3://bucket/prefix``), False for a local path."""
    return isinstance(location, str) and "://" in location


def split_uri(uri: str, setting: str = SETTING) -> tuple[str, str, str]:
    """``s3://bucket/a/b`` -> ``("s3", "bucket", "a/b")``; ValueError naming ``setting`` otherwise."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in SCHEMES:
        known = ", ".join(f"{s}://bucket/prefix" for s in SCHEMES)
        raise ValueError(
            f"{setting}={uri!r} is not an object-store URI this project can use; use {known}, "
            f"or leave {setting} unset for the local lake under the data directory"
        )
    bucket, _, prefix = rest.rstrip("/").partition("/")
    if not bucket:
        raise ValueError(f"{setting}={uri!r} names no bucket; use {scheme}://bucket/prefix")
    return scheme, bucket, prefix.strip("/")


def join(root: str | os.PathLike, *parts: str) -> str | Path:
    """``join("s3://b/lake", "t", "date=1")`` -> ``"s3://b/lake/t/date=1"``; a local folder gives a ``Path``."""
    if not is_remote(root):
        return Path(root).joinpath(*parts)
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def relative(location: str | os.PathLike, root: str | os.PathLike) -> str:
    """``location`` relative to the folder or URI ``root``, '/'-separated; ValueError when it is not
    under ``root``. Local paths are made absolute, not resolved: a symlinked folder stays under its root."""
    if not is_remote(root):
        return Path(os.path.abspath(location)).relative_to(os.path.abspath(root)).as_posix()
    prefix = root.rstrip("/") + "/"
    if not (is_remote(location) and location.startswith(prefix)):
        raise ValueError(f"{location} is not under {root}")
    return location.removeprefix(prefix)


def filesystem(uri: str):
    """The fsspec filesystem serving ``uri`` (one per scheme and process)."""
    return _filesystem(split_uri(uri)[0])


@functools.cache
def _filesystem(scheme: str):
    try:
        import fsspec

        __import__(SCHEMES[scheme])
    except ImportError as exc:
        raise ObjectStoreError(
            f"{SETTING} names a {scheme}:// location but {SCHEMES[scheme]} is not installed: "
            f"pip install -e '.[cluster]' (or unset {SETTING} for the local lake)"
        ) from exc
    # No listing cache: another machine may publish a day at any time, and a stale listing would hide it.
    return fsspec.filesystem(scheme, use_listings_cache=False)


def fs_path(uri: str) -> str:
    """The path fsspec uses for ``uri`` (``s3://b/k`` -> ``b/k``)."""
    return uri.partition("://")[2]


def _endpoint() -> str:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "AWS's default endpoint"


def _store_exceptions() -> tuple[type[BaseException], ...]:
    """What s3fs raises when the store is down or refuses us (FileNotFoundError is not among them)."""
    kinds: list[type[BaseException]] = [ConnectionError, TimeoutError, PermissionError]
    try:
        import aiohttp
        import botocore.exceptions

        kinds += [botocore.exceptions.BotoCoreError, aiohttp.ClientError]
    except ImportError:
        pass
    return tuple(kinds)


@contextmanager
def store_errors(what: str, where: str) -> Iterator[None]:
    """Turn the store's connection and permission errors into :class:`ObjectStoreError`: what failed,
    where, and what to do. A missing object (FileNotFoundError) passes through unchanged."""
    try:
        yield
    except ObjectStoreError:
        raise
    except _store_exceptions() as exc:
        detail = " ".join(str(exc).split())[:300]
        raise ObjectStoreError(
            f"{what} failed at {where}: the object store did not answer or refused ({type(exc).__name__}: "
            f"{detail}); not a recording's fault, nothing quarantined. Check that the S3 server at {_endpoint()} "
            f"is up and that the credentials may use the bucket of {SETTING}, then re-run the day"
        ) from exc


def check_reachable(uri: str, setting: str = SETTING) -> None:
    """Raise ObjectStoreError naming ``setting`` unless the bucket of ``uri`` can be listed."""
    scheme, bucket, _ = split_uri(uri, setting)
    fs = filesystem(uri)
    try:
        with store_errors(f"reaching the bucket of {setting}={uri}", f"{scheme}://{bucket}"):
            fs.ls(bucket, refresh=True)
    except FileNotFoundError:
        raise ObjectStoreError(
            f"{setting}={uri}: bucket {bucket!r} does not exist at {_endpoint()}; create it, "
            f"or point {setting} at an existing bucket"
        ) from None


def put_file(local: str | os.PathLike, uri: str) -> None:
    """Publish the local file ``local`` as the object ``uri`` in one upload: the object appears whole."""
    try:
        with store_errors("uploading", uri):
            filesystem(uri).put_file(str(local), fs_path(uri))
    except FileNotFoundError as exc:  # the local file is ours and exists: the bucket is gone
        raise ObjectStoreError(
            f"uploading failed at {uri}: the bucket does not exist at {_endpoint()} ({exc}); not a recording's "
            f"fault, nothing quarantined. Create the bucket or point {SETTING} at one, then re-run the day"
        ) from exc


def put_bytes(data: bytes, uri: str) -> None:
    """Publish ``data`` as the object ``uri`` in one PUT."""
    with store_errors("uploading", uri):
        filesystem(uri).pipe_file(fs_path(uri), data)


def cat(uri: str) -> bytes:
    """The bytes of the object ``uri``, in one GET; FileNotFoundError when there is none."""
    with store_errors("reading", uri):
        return filesystem(uri).cat_file(fs_path(uri))


def exists(location: str | os.PathLike) -> bool:
    """Whether the local file or the object of a URI exists."""
    if not is_remote(location):
        return Path(location).exists()
    with store_errors("looking up", location):
        return filesystem(location).exists(fs_path(location))


def glob(uri_pattern: str) -> list[str]:
    """URIs matching ``uri_pattern`` (``s3://b/lake/t/date=*/part-0.parquet``), sorted."""
    scheme = uri_pattern.partition("://")[0]
    with store_errors("listing", uri_pattern):
        found = filesystem(uri_pattern).glob(fs_path(uri_pattern))
    return sorted(f"{scheme}://{p}" for p in found)


def identities(uri_pattern: str) -> dict[str, str]:
    """URI -> what changes when the object is written again (its ETag and size), for every object
    matching ``uri_pattern``, in one listing."""
    scheme = uri_pattern.partition("://")[0]
    with store_errors("listing", uri_pattern):
        found = filesystem(uri_pattern).glob(fs_path(uri_pattern), detail=True)
    return {f"{scheme}://{path}": f"{info.get('ETag')}:{info.get('size')}" for path, info in sorted(found.items())}


def copy(source: str, target: str) -> None:
    """Copy the object ``source`` to ``target`` inside the store (server-side: no byte leaves it)."""
    with store_errors("copying", f"{source} to {target}"):
        filesystem(source).copy(fs_path(source), fs_path(target))


def remove(uri: str, missing_ok: bool = False) -> None:
    try:
        with store_errors("deleting", uri):
            filesystem(uri).rm_file(fs_path(uri))
    except FileNotFoundError:
        if not missing_ok:
            raise


@contextmanager
def open_input(location: str | os.PathLike) -> Iterator:
    """A seekable binary file object reading a local file, or the object of a URI range by range
    (soundfile, pyarrow and hashlib read from it)."""
    if not is_remote(location):
        with open(location, "rb") as f:
            yield f
        return
    with store_errors("reading", location), filesystem(location).open(fs_path(location), "rb") as f:
        yield f


def find(uri: str) -> list[str]:
    """The URIs of every object under the prefix ``uri``, sorted (none when there is none)."""
    scheme = uri.partition("://")[0]
    with store_errors("listing", uri):
        found = filesystem(uri).find(fs_path(uri).rstrip("/") + "/")
    return sorted(f"{scheme}://{p}" for p in found)


def remove_tree(uri: str) -> list[str]:
    """Delete every object under the prefix ``uri``; returns the URIs deleted."""
    found = find(uri)
    if found:
        with store_errors("deleting", uri):
            filesystem(uri).rm([fs_path(u) for u in found])
    return found


def is_versioned(uri: str) -> bool:
    """Whether the bucket of ``uri`` keeps old versions of objects (versioning Enabled, or Suspended
    after having been enabled: the versions kept meanwhile stay)."""
    _, bucket, _ = split_uri(uri)
    with store_errors("reading the versioning of the bucket", f"s3://{bucket}"):
        status = filesystem(uri).call_s3("get_bucket_versioning", Bucket=bucket).get("Status", "")
    return status in ("Enabled", "Suspended")


def old_versions(uri: str) -> list[tuple[str, str, bool]]:
    """``(object URI, version id, is a delete marker)`` for every version under the prefix ``uri``
    that is not an object's current bytes: its old versions and every delete marker."""
    _, bucket, prefix = split_uri(uri)
    scheme = uri.partition("://")[0]
    fs = filesystem(uri)
    found = []
    with store_errors("listing old versions", uri):
        page: dict = {}
        while True:
            listed = fs.call_s3("list_object_versions", Bucket=bucket, Prefix=prefix.rstrip("/") + "/", **page)
            found += [(v["Key"], v["VersionId"], False) for v in listed.get("Versions", []) if not v["IsLatest"]]
            found += [(m["Key"], m["VersionId"], True) for m in listed.get("DeleteMarkers", [])]
            if not listed.get("IsTruncated"):
                break
            page = {"KeyMarker": listed["NextKeyMarker"], "VersionIdMarker": listed["NextVersionIdMarker"]}
    return [(f"{scheme}://{bucket}/{key}", version, marker) for key, version, marker in found]


def delete_old_versions(uri: str, wanted: Callable[[str], bool]) -> int:
    """In a versioned bucket, under the prefix ``uri``: for every object ``wanted`` (its URI) is true
    of, delete every version but the current one, and every delete marker. Afterwards an object
    that was rewritten keeps its newest bytes only, and one that was deleted has no version left
    (its key is gone from the version listing too). Returns the number of versions and markers deleted."""
    _, bucket, _ = split_uri(uri)
    found = [(u, v, marker) for u, v, marker in old_versions(uri) if wanted(u)]
    # old versions first, delete markers after: a marker removed never uncovers an old version
    doomed = [{"Key": split_uri(u)[2], "VersionId": v} for u, v, marker in sorted(found, key=lambda f: f[2])]
    fs = filesystem(uri)
    with store_errors("deleting old versions", uri):
        for start in range(0, len(doomed), 1000):  # S3 deletes at most 1000 keys per request
            done = fs.call_s3("delete_objects", Bucket=bucket, Delete={"Objects": doomed[start : start + 1000]})
            if done.get("Errors"):
                error = done["Errors"][0]
                raise PermissionError(
                    f"{len(done['Errors'])} old version(s) were not deleted, e.g. {error.get('Key')}: "
                    f"{error.get('Code')} {error.get('Message')}"
                )
    return len(doomed)
