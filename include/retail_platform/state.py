"""The platform's small durable state (pauses, outages, schema history), kept beside the lake.

Documents are JSON under ``<lake>/_state/``: a local folder by default, S3 in production,
so every worker sees the same state. Each write is atomic.
"""

from __future__ import annotations

from datetime import UTC, datetime

from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings


def utcnow_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PlatformState:
    def __init__(self, storage: LakeStorage, source: str):
        self.storage = storage
        self.source = source

    def _path(self, *parts: str) -> str:
        return self.storage.path("_state", self.source, *parts)

    def get(self, *parts: str) -> dict | None:
        return self.storage.read_json(self._path(*parts))

    def put(self, doc: dict, *parts: str) -> None:
        self.storage.write_json_atomic(self._path(*parts), doc)

    def delete(self, *parts: str) -> None:
        self.storage.delete(self._path(*parts))

    def list(self, *parts: str) -> list[str]:
        return sorted(info.base_name for info in self.storage.list(self._path(*parts)) if info.is_file)

    # ------------------------------------------------------------------ pauses
    def pause(
        self, table: str, reason: str, *, changes: list[dict] | None = None, by: str = "schema-watch", **extra
    ) -> dict:
        """Stop extracting a table until an operator accepts the change (by updating the contract)."""
        doc = self.get("pauses", f"{table}.json") or {"table": table, "since": utcnow_iso()}
        doc |= {"reason": reason, "changes": changes or [], "by": by, "updated": utcnow_iso(), **extra}
        self.put(doc, "pauses", f"{table}.json")
        return doc

    def unpause(self, table: str) -> None:
        self.delete("pauses", f"{table}.json")

    def pauses(self) -> dict[str, dict]:
        out = {}
        for name in self.list("pauses"):
            doc = self.get("pauses", name)
            if doc:
                out[doc["table"]] = doc
        return out


def state_for(settings: Settings, source: str) -> PlatformState:
    """A source's state beside the settings' lake (shared by extraction and the schema watch)."""
    return PlatformState(
        LakeStorage.from_uri(settings.lake_uri, s3_endpoint_url=settings.s3_endpoint_url), source
    )
