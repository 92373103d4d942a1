"""The lake's storage: a local folder or S3, through one pyarrow filesystem API.

Two operations need care. Publishing a small document (a manifest, a watermark) is atomic:
locally it is written to a temporary name and renamed; on S3 a single PUT is atomic by itself
(S3 has no rename: a "move" is a copy and a delete). Updating a document that several writers
change (a table's index: extraction commits and compaction) is a compare-and-swap: locally under
an exclusive lock on a file beside it, on S3 a conditional PUT (If-Match / If-None-Match) retried
from a fresh read when another writer got there first.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import msgspec
import pyarrow.fs as pafs

CAS_ATTEMPTS = 20  # conditional PUTs lost to other writers before giving up (S3)


class ConcurrentUpdateError(RuntimeError):
    """Another writer kept changing a document between our read and our write."""


@dataclass
class LakeStorage:
    uri: str
    fs: pafs.FileSystem
    root: str  # path inside fs, without a trailing slash
    is_local: bool
    s3_endpoint_url: str | None = None

    @classmethod
    def from_uri(cls, uri: str, *, s3_endpoint_url: str | None = None) -> LakeStorage:
        parts = urlsplit(uri)
        if parts.scheme == "s3":
            endpoint = (
                s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            )
            kwargs = {}
            if endpoint:
                endpoint_parts = urlsplit(endpoint)
                kwargs = {
                    "endpoint_override": endpoint_parts.netloc,
                    "scheme": endpoint_parts.scheme or "https",
                }
            region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
            fs = pafs.S3FileSystem(region=region, **kwargs)
            root = f"{parts.netloc}{parts.path}".rstrip("/")
            return cls(uri.rstrip("/"), fs, root, is_local=False, s3_endpoint_url=endpoint)
        if parts.scheme not in ("", "file"):
            raise ValueError(f"RETAIL_LAKE_URI must be a local path or s3://bucket/prefix, got {uri!r}")
        path = os.path.abspath(parts.path if parts.scheme == "file" else uri)
        return cls(path, pafs.LocalFileSystem(), path.rstrip("/"), is_local=True)

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *[p.strip("/") for p in parts if p]])

    def url(self, path: str) -> str:
        """An absolute URL of a path for readers outside pyarrow (DuckDB, Spectrum manifests)."""
        return path if self.is_local else f"s3://{path}"

    # ------------------------------------------------------------------ reads
    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def read_bytes(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    def read_json(self, path: str) -> dict | None:
        try:
            return json.loads(self.read_bytes(path))
        except FileNotFoundError:
            return None
        except OSError as exc:  # pyarrow's S3 maps "no such key" to OSError on some paths
            if "NoSuchKey" in str(exc) or "does not exist" in str(exc).lower():
                return None
            raise

    def list(self, path: str, recursive: bool = False) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(path, allow_not_found=True, recursive=recursive)
        return self.fs.get_file_info(selector)

    def size(self, path: str) -> int:
        return self.fs.get_file_info(path).size

    # ------------------------------------------------------------------ writes
    def ensure_dir(self, path: str) -> None:
        if self.is_local:
            self.fs.create_dir(path, recursive=True)

    def write_bytes_atomic(self, path: str, data: bytes) -> None:
        """Readers see the old content or the new one, never a torn write."""
        if not self.is_local:
            with self.fs.open_output_stream(path) as out:  # one PUT
                out.write(data)
            return
        directory = path.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        tmp = f"{directory}/.{uuid.uuid4().hex}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        # The rename itself is durable only once the directory entry is flushed.
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def write_json_atomic(self, path: str, doc: dict) -> None:
        self.write_bytes_atomic(
            path, (json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n").encode()
        )

    def write_document_atomic(self, path: str, doc: dict) -> None:
        """A machine-read document (indexes): compact JSON, encoded fast whatever its size."""
        self.write_bytes_atomic(path, msgspec.json.encode(doc))

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)

    # ------------------------------------------------------------------ read-modify-write
    def update_json(
        self,
        path: str,
        change: Callable[[dict | None], dict],
        *,
        while_locked: Callable[[dict], None] | None = None,
    ) -> dict:
        """Replace the document at ``path`` with ``change(current)`` (current is None when absent),
        with no update of another writer lost in between; returns what was written. ``change`` may
        run more than once (S3, after a lost race) and must not have side effects. On a local lake
        ``while_locked(new)`` runs before the lock is released (writers after it wait); on S3 there
        is no lock and it is not called."""
        if self.is_local:
            with self.locked(path):
                doc = change(self.read_document(path))
                self.write_bytes_atomic(path, msgspec.json.encode(doc))
                if while_locked is not None:
                    while_locked(doc)
                return doc
        return self._update_s3(path, change)

    @contextlib.contextmanager
    def locked(self, path: str):
        """An exclusive lock on ``path`` between processes of this machine (local lakes only)."""
        directory = path.rsplit("/", 1)[0]
        self.fs.create_dir(directory, recursive=True)
        with open(f"{path}.lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the handle closes
            yield

    def read_document(self, path: str) -> dict | None:
        try:
            return msgspec.json.decode(self.read_bytes(path))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if "NoSuchKey" in str(exc) or "does not exist" in str(exc).lower():
                return None
            raise

    def _s3_client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_endpoint_url)

    def _update_s3(self, path: str, change: Callable[[dict | None], dict]) -> dict:
        from botocore.exceptions import ClientError

        client = self._s3_client()
        bucket, key = path.split("/", 1)
        for attempt in range(CAS_ATTEMPTS):
            try:
                current = client.get_object(Bucket=bucket, Key=key)
                doc, condition = msgspec.json.decode(current["Body"].read()), {"IfMatch": current["ETag"]}
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                    raise
                doc, condition = None, {"IfNoneMatch": "*"}
            new = change(doc)
            try:
                client.put_object(Bucket=bucket, Key=key, Body=msgspec.json.encode(new), **condition)
                return new
            except ClientError as exc:
                if exc.response["Error"]["Code"] not in ("PreconditionFailed", "ConditionalRequestConflict"):
                    raise
                time.sleep(0.05 * (attempt + 1))  # another writer got there first: read again
        raise ConcurrentUpdateError(f"{path}: {CAS_ATTEMPTS} conditional writes lost to other writers")
