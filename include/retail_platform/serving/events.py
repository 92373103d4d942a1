"""The sales platform's shopper event, exactly as the design fixes it, and why an event is refused.

An event is read once, from its raw bytes, by pydantic in strict mode: `quantity` arrives as a
string of digits, `customer_number` as an integer, `in_shopping_cart` as a boolean; nothing is
coerced. Fields the contract does not name are ignored (the sales platform may add some). Every
problem gets a kind (for counting) and a reason naming the field and quoting the value, truncated
(for the dead letter). Only data that is malformed is refused: an unknown product is not.
"""

from __future__ import annotations

import math
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
    max_credit_limit: float = 1e12


QUOTE_CHARS = 60  # a dead letter quotes at most this much of the offending value


def quote(value) -> str:
    """The offending value as a dead letter shows it: its JSON-ish repr, truncated."""
    text = repr(value)
    return text if len(text) <= QUOTE_CHARS else f"{text[:QUOTE_CHARS]}... ({len(text):,} characters)"


def _bad_number(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return None


class BrowseItem(BaseModel):
    model_config = ConfigDict(strict=True, frozen=True)

    product_code: str = Field(min_length=1, max_length=32)
    quantity: str = Field(description='a whole number of units, as a string (e.g. "1")')
    in_shopping_cart: bool

    @field_validator("quantity")
    @classmethod
    def _sensible_quantity(cls, quantity: str, info: ValidationInfo) -> str:
        if not DIGITS.fullmatch(quantity):
            raise PydanticCustomError(
                "wrong_type", "quantity must be a string of digits, got {q}", {"q": quote(quantity)}
            )
        limit = (info.context or {}).get("max_quantity", EventLimits.max_quantity)
        if not 1 <= int(quantity) <= limit:
            raise PydanticCustomError(
                "absurd_quantity",
                "quantity {q} is outside 1..{limit}",
                {"q": quote(quantity), "limit": limit},
            )
        return quantity

    @property
    def units(self) -> int:
        return int(self.quantity)


class ShopperEvent(BaseModel):
    """What the sales platform puts on the stream (and POSTs to the API).

    Numbers keep the type they were sent with (``credit_limit`` 21000 stays an integer), so the
    output record echoes the event unchanged."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    session_id: str = Field(min_length=1, max_length=128)
    customer_number: int = Field(ge=1, le=2**62)
    city: str | None = Field(default=None, max_length=100)
    country: str | None = Field(default=None, max_length=100)
    credit_limit: int | float | None = Field(default=None, union_mode="left_to_right")
    browse_history: list[BrowseItem] = Field(default_factory=list)

    @field_validator("credit_limit")
    @classmethod
    def _sensible_credit_limit(cls, value: int | float | None, info: ValidationInfo):
        if value is None:
            return value
        if isinstance(value, float) and (name := _bad_number(value)) is not None:
            raise PydanticCustomError("wrong_type", "credit_limit is {name}, not a number", {"name": name})
        limit = (info.context or {}).get("max_credit_limit", EventLimits.max_credit_limit)
        if not 0 <= value <= limit:
            raise PydanticCustomError(
                "wrong_type",
                "credit_limit {v} is outside 0..{limit}",
                {"v": quote(value), "limit": f"{limit:g}"},
            )
        return value

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
            credit_limit=None if self.credit_limit is None else float(self.credit_limit),
        )

    def product_codes(self) -> list[str]:
        """Every product the event names, in order, once each."""
        return list(dict.fromkeys(item.product_code for item in self.browse_history))

    def cart(self) -> set[str]:
        return {item.product_code for item in self.browse_history if item.in_shopping_cart}

    def anchor_product(self, known=None) -> str | None:
        """The item similar items are found for: the latest cart item, else the latest browsed one
        (the history is in the order the shopper saw the items). ``known``: only products in it
        may anchor (a product the catalogue does not know has no neighbours)."""
        items = [i for i in self.browse_history if known is None or i.product_code in known]
        for item in reversed(items):
            if item.in_shopping_cart:
                return item.product_code
        return items[-1].product_code if items else None


_KIND_OF_ERROR = {
    "json_invalid": DeadLetterKind.BAD_JSON,
    "json_type": DeadLetterKind.BAD_JSON,
    "missing": DeadLetterKind.MISSING_FIELD,
    "absurd_quantity": DeadLetterKind.ABSURD_QUANTITY,
}
# Errors whose message already quotes the value (our own), or for which the input says nothing.
_QUOTED = {"wrong_type", "absurd_quantity", "missing"}


def _location(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "event"


def _describe(error: dict) -> str:
    where, message = _location(error["loc"]), error["msg"]
    if error["type"] in _QUOTED or "input" not in error:
        return f"{where}: {message}"
    value = error["input"]
    if isinstance(value, float) and (name := _bad_number(value)) is not None:
        return f"{where}: {message}, got {name}"
    if isinstance(value, dict | list) and error["type"] not in ("json_invalid", "json_type"):
        return f"{where}: {message}, got a {type(value).__name__} of {len(value)} entries"
    return f"{where}: {message}, got {quote(value)}"


def _explain(error: ValidationError) -> MalformedEvent:
    errors = error.errors(include_url=False)
    first = errors[0]
    kind = _KIND_OF_ERROR.get(first["type"], DeadLetterKind.WRONG_TYPE)
    reasons = [_describe(e) for e in errors[:5]]
    if len(errors) > 5:
        reasons.append(f"... and {len(errors) - 5} more")
    return MalformedEvent(kind, "; ".join(reasons))


def parse_event(raw: bytes, limits: EventLimits, size: int | None = None) -> ShopperEvent:
    """The event in ``raw``, or MalformedEvent with its kind and reason. ``size``: the event's real size
    when ``raw`` holds only its first bytes (the API stops keeping a body past the limit).

    Products are not checked against any catalogue: a product the model or the catalogue does not
    know is a fact about them, not a fault of the event (the handler answers and names it)."""
    size = len(raw) if size is None else size
    if size > limits.max_bytes:
        raise MalformedEvent(
            DeadLetterKind.OVERSIZED, f"event of {size:,} bytes is over {limits.max_bytes:,}"
        )
    context = {
        "max_quantity": limits.max_quantity,
        "max_browse_items": limits.max_browse_items,
        "max_credit_limit": limits.max_credit_limit,
    }
    try:
        return ShopperEvent.model_validate_json(raw, context=context)
    except ValidationError as exc:
        raise _explain(exc) from None
