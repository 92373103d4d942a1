"""The lake's storage: a local folder or S3, through one pyarrow filesystem API.

Only one operation needs care to be atomic: publishing a small document (a manifest,
a watermark). Locally it is written to a temporary name and renamed; on S3 a single PUT
is atomic by itself (S3 has no rename: a "move" is a copy and a delete).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from urllib.parse import urlsplit

import pyarrow.fs as pafs


@dataclass
class LakeStorage:
    uri: str
    fs: pafs.FileSystem
    root: str  # path inside fs, without a trailing slash
    is_local: bool

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
            return cls(uri.rstrip("/"), fs, root, is_local=False)
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

    def delete(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(path)
