"""The sales platform's shopper event, exactly as the design fixes it, and why an event is refused.

An event is read once, from its raw bytes, by pydantic in strict mode: `quantity` arrives as a
string of digits, `customer_number` as an integer, `in_shopping_cart` as a boolean; nothing is
coerced. Fields the contract does not name are ignored (the sales platform may add some). Every
problem gets a kind (for counting) and a reason naming the field (for the dead letter).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from retail_platform.vectors.model import UserFeatures

DIGITS = re.compile(r"[0-9]{1,9}")


class DeadLetterKind(StrEnum):
    OVERSIZED = "oversized"
    BAD_JSON = "bad_json"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    UNKNOWN_PRODUCT = "unknown_product"
    ABSURD_QUANTITY = "absurd_quantity"


class MalformedEvent(ValueError):
    def __init__(self, kind: DeadLetterKind, reason: str):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


@dataclass(frozen=True)
class EventLimits:
    max_bytes: int = 32768
    max_quantity: int = 1000
    max_browse_items: int = 200


class BrowseItem(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    product_code: str = Field(min_length=1, max_length=32)
    quantity: str = Field(description='a whole number of units, as a string (e.g. "1")')
    in_shopping_cart: bool

    @field_validator("product_code")
    @classmethod
    def _known_product(cls, code: str, info: ValidationInfo) -> str:
        catalogue = (info.context or {}).get("catalogue")
        if catalogue is not None and code not in catalogue:
            raise PydanticCustomError(
                "unknown_product", "product {code} is not in the catalogue", {"code": code}
            )
        return code

    @field_validator("quantity")
    @classmethod
    def _sensible_quantity(cls, quantity: str, info: ValidationInfo) -> str:
        if not DIGITS.fullmatch(quantity):
            raise PydanticCustomError(
                "wrong_type", "quantity must be a string of digits, got {q!r}", {"q": quantity}
            )
        limit = (info.context or {}).get("max_quantity", EventLimits.max_quantity)
        if not 1 <= int(quantity) <= limit:
            raise PydanticCustomError(
                "absurd_quantity", "quantity {q} is outside 1..{limit}", {"q": quantity, "limit": limit}
            )
        return quantity

    @property
    def units(self) -> int:
        return int(self.quantity)


class ShopperEvent(BaseModel):
    """What the sales platform puts on the stream (and POSTs to the API)."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    session_id: str = Field(min_length=1, max_length=128)
    customer_number: int = Field(ge=1, le=2**62)
    city: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=100)
    credit_limit: float | None = Field(default=None, ge=0, le=1e12)
    browse_history: list[BrowseItem] = Field(default_factory=list)

    @field_validator("browse_history")
    @classmethod
    def _bounded_history(cls, items: list[BrowseItem], info: ValidationInfo) -> list[BrowseItem]:
        limit = (info.context or {}).get("max_browse_items", EventLimits.max_browse_items)
        if len(items) > limit:
            raise PydanticCustomError(
                "wrong_type", "browse_history has {n} items, over {limit}", {"n": len(items), "limit": limit}
            )
        return items

    def features(self) -> UserFeatures:
        return UserFeatures(
            customer_number=self.customer_number,
            city=self.city,
            state=None,
            country=self.country,
            credit_limit=self.credit_limit,
        )

    def cart(self) -> set[str]:
        return {item.product_code for item in self.browse_history if item.in_shopping_cart}

    def anchor_product(self) -> str | None:
        """The item similar items are found for: the latest cart item, else the latest browsed one
        (the history is in the order the shopper saw the items)."""
        for item in reversed(self.browse_history):
            if item.in_shopping_cart:
                return item.product_code
        return self.browse_history[-1].product_code if self.browse_history else None


_KIND_OF_ERROR = {
    "json_invalid": DeadLetterKind.BAD_JSON,
    "json_type": DeadLetterKind.BAD_JSON,
    "missing": DeadLetterKind.MISSING_FIELD,
    "unknown_product": DeadLetterKind.UNKNOWN_PRODUCT,
    "absurd_quantity": DeadLetterKind.ABSURD_QUANTITY,
}


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "event"


def _explain(error: ValidationError) -> MalformedEvent:
    errors = error.errors(include_url=False)
    first = errors[0]
    kind = _KIND_OF_ERROR.get(first["type"], DeadLetterKind.WRONG_TYPE)
    reasons = [f"{_location(e['loc'])}: {e['msg']}" for e in errors[:5]]
    if len(errors) > 5:
        reasons.append(f"... and {len(errors) - 5} more")
    return MalformedEvent(kind, "; ".join(reasons))


def parse_event(raw: bytes, limits: EventLimits, catalogue: frozenset[str] | None = None) -> ShopperEvent:
    """The event in ``raw``, or MalformedEvent with its kind and reason. ``catalogue``: the product codes
    the current model knows (None before any model: then no product is refused as unknown)."""
    if len(raw) > limits.max_bytes:
        raise MalformedEvent(
            DeadLetterKind.OVERSIZED, f"event of {len(raw):,} bytes is over {limits.max_bytes:,}"
        )
    context = {
        "catalogue": catalogue,
        "max_quantity": limits.max_quantity,
        "max_browse_items": limits.max_browse_items,
    }
    try:
        return ShopperEvent.model_validate_json(raw, context=context)
    except ValidationError as exc:
        raise _explain(exc) from None
