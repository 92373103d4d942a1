"""What the serving side answers and keeps: the output record and the dead letter.

The output record is the event's fields plus the recommender's answer and the platform's own
additions (which model version or popular list served it, whether the fallback did and why,
timings). The same record goes to the sales platform (output stream, API) and to the lake.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pyarrow as pa
from pydantic import BaseModel, Field

from retail_platform.serving.events import BrowseItem, DeadLetterKind
from retail_platform.serving.search import SimilarSource


class FallbackReason(StrEnum):
    NO_MODEL = "no_model"  # nothing published yet, or not loadable (cold start without the store)
    DEADLINE = "deadline"  # the event's budget, measured from its arrival, ran out
    OVERLOADED = "overloaded"  # more requests in flight than the process takes on
    ERROR = "error"  # anything unexpected while answering from the model


class UserSource(StrEnum):
    PUBLISHED = "published"  # the published vector of a known customer
    FEATURES = "features"  # from the event's features (and browse history) with the published encoder
    NONE = "none"  # not computed (fallback)


class Origin(StrEnum):
    STREAM = "stream"
    LAMBDA = "lambda"
    API = "api"


class RecommendedItem(BaseModel):
    id: str
    score: float


class SimilarItem(BaseModel):
    id: str
    distance: float | None = Field(
        description="cosine distance (0 = same direction); null when the popular list answered"
    )


class SimilarItems(BaseModel):
    product_code: str
    similar_items: list[SimilarItem]
    source: SimilarSource = Field(
        SimilarSource.MODEL,
        description="model: nearest in the model; popular_in_line / popular: the fallback's popular list "
        "within the product's line, or all of it",
    )


class Timings(BaseModel):
    arrived_at: datetime
    queued_ms: float = Field(description="from arrival until the handler began")
    handler_ms: float
    total_ms: float = Field(description="from arrival until the answer was ready")


class OutputRecord(BaseModel):
    """The answer to one event."""

    event_id: str = Field(description="unique per event: stream:shard:sequence, or api:<uuid>")
    session_id: str
    customer_number: int
    city: str | None
    country: str | None
    credit_limit: int | float | None = Field(description="as sent: an integer stays an integer")
    browse_history: list[BrowseItem]
    recommended_items: list[RecommendedItem]
    similar_items: SimilarItems | None = Field(
        description="for the latest cart item the catalogue knows, else the latest browsed one; "
        "null only when the event names no such product"
    )
    unknown_products: list[str] = Field(
        description="products of the event the catalogue does not know: left out of the anchor and "
        "the exclusions, the event answered from the rest"
    )
    products_from_features: list[str] = Field(
        description="products of the event the model never saw in training: their vectors were "
        "computed from their features when the version was published"
    )
    model_version: str | None = Field(description="the model version that answered (None: fallback)")
    popular_build: str | None = Field(description="the popular list the fallback served from")
    fallback: bool
    fallback_reason: FallbackReason | None
    user_source: UserSource
    timings: Timings


@dataclass(frozen=True)
class DeadLetter:
    event_id: str
    origin: Origin
    received_at: datetime
    kind: DeadLetterKind
    reason: str
    payload: bytes  # what was kept of it (the API keeps no more than the limit and one byte)
    size: int | None = None  # the event's real size when ``payload`` is only its beginning

    def to_row(self) -> dict:
        return {
            "event_id": self.event_id,
            "origin": str(self.origin),
            "received_at": self.received_at,
            "kind": str(self.kind),
            "reason": self.reason,
            "payload": self.payload,
            "payload_bytes": len(self.payload) if self.size is None else self.size,
        }

    def to_json(self) -> dict:
        row = self.to_row()
        row["received_at"] = self.received_at.isoformat()
        row["payload_base64"] = base64.b64encode(row.pop("payload")).decode()
        return row


_ITEM = pa.struct(
    [("product_code", pa.string()), ("quantity", pa.string()), ("in_shopping_cart", pa.bool_())]
)
OUTPUT_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("session_id", pa.string()),
        ("customer_number", pa.int64()),
        ("city", pa.string()),
        ("country", pa.string()),
        ("credit_limit", pa.float64()),
        ("browse_history", pa.list_(_ITEM)),
        ("recommended_items", pa.list_(pa.struct([("id", pa.string()), ("score", pa.float64())]))),
        (
            "similar_items",
            pa.struct(
                [
                    ("product_code", pa.string()),
                    ("similar_items", pa.list_(pa.struct([("id", pa.string()), ("distance", pa.float64())]))),
                    ("source", pa.string()),
                ]
            ),
        ),
        ("unknown_products", pa.list_(pa.string())),
        ("products_from_features", pa.list_(pa.string())),
        ("model_version", pa.string()),
        ("popular_build", pa.string()),
        ("fallback", pa.bool_()),
        ("fallback_reason", pa.string()),
        ("user_source", pa.string()),
        (
            "timings",
            pa.struct(
                [
                    ("arrived_at", pa.timestamp("us", tz="UTC")),
                    ("queued_ms", pa.float64()),
                    ("handler_ms", pa.float64()),
                    ("total_ms", pa.float64()),
                ]
            ),
        ),
    ]
)
DEAD_LETTER_SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("origin", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")),
        ("kind", pa.string()),
        ("reason", pa.string()),
        ("payload", pa.binary()),
        ("payload_bytes", pa.int64()),
    ]
)


def utc_from_epoch(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
