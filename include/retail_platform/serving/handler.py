"""The one handler every entry point calls (stream consumer, Lambda, API): an event's raw bytes in,
an output record or a dead letter out.

The budget runs from the event's arrival (the stream's arrival timestamp, or the request's start),
not from when the handler got to it: time spent queued counts. Past the deadline, on any error, when
no model is loaded, or when the process already has more requests in flight than it takes on, the
answer is the popular list, and the record says so and why. A request reads the current snapshot
once, so it finishes on the version it began with, whatever a reload swaps in meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from retail_platform.serving import metrics
from retail_platform.serving.events import EventLimits, MalformedEvent, ShopperEvent, parse_event
from retail_platform.serving.holder import ModelHolder
from retail_platform.serving.records import (
    DeadLetter,
    FallbackReason,
    OutputRecord,
    RecommendedItem,
    SimilarItem,
    SimilarItems,
    Timings,
    UserSource,
    utc_from_epoch,
)
from retail_platform.serving.search import ServingSnapshot, SimilarSource
from retail_platform.serving.settings import ServingSettings

log = logging.getLogger(__name__)


class DeadlinePassed(Exception):
    pass


class InFlightLimit:
    """Admits at most ``limit`` requests at once; the rest are shed to the fallback, never queued."""

    def __init__(self, limit: int):
        self.limit = limit
        self._sem = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.current = 0

    def try_enter(self) -> bool:
        if not self._sem.acquire(blocking=False):
            return False
        with self._lock:
            self.current += 1
        return True

    def leave(self) -> None:
        with self._lock:
            self.current -= 1
        self._sem.release()


@dataclass(frozen=True)
class Outcome:
    record: OutputRecord | None = None
    dead_letter: DeadLetter | None = None

    @cached_property
    def json(self) -> bytes:
        """The output record as sent (output stream, API, lake): serialised once."""
        return self.record.model_dump_json().encode()


@dataclass(frozen=True)
class HandlerConfig:
    top_k: int = 10
    deadline_s: float = 0.3
    max_in_flight: int = 64
    limits: EventLimits = EventLimits()

    @classmethod
    def from_settings(cls, settings: ServingSettings) -> HandlerConfig:
        return cls(
            top_k=settings.top_k,
            deadline_s=settings.deadline_s,
            max_in_flight=settings.max_in_flight,
            limits=EventLimits(settings.max_event_bytes, settings.max_quantity, settings.max_browse_items),
        )


class Handler:
    def __init__(self, holder: ModelHolder, config: HandlerConfig, clock=time.time):
        self.holder = holder
        self.config = config
        self.clock = clock
        self.in_flight = InFlightLimit(config.max_in_flight)

    def warm_up(self) -> None:
        """One made-up event through every step, so the first real request pays no first-call costs."""
        sample = b'{"session_id": "warm-up", "customer_number": 1, "country": "USA", "browse_history": []}'
        record = self.handle(sample, event_id="warm-up", arrival=self.clock(), origin="warm_up").record
        if record is not None:
            record.model_dump_json()

    def handle(
        self,
        raw: bytes,
        *,
        event_id: str,
        arrival: float,
        origin,
        admitted: bool | None = None,
        size: int | None = None,
    ) -> Outcome:
        """``admitted``: the caller already counted this request in flight (True) or found the limit
        reached (False); None: the handler counts it itself. ``size``: the event's real size when
        ``raw`` is only its beginning."""
        snapshot = self.holder.snapshot
        try:
            event = parse_event(raw, self.config.limits, size)
        except MalformedEvent as bad:
            metrics.DEAD_LETTERS.labels(origin=str(origin), kind=str(bad.kind)).inc()
            letter = DeadLetter(
                event_id, origin, utc_from_epoch(arrival), bad.kind, bad.reason, bytes(raw), size
            )
            return Outcome(dead_letter=letter)
        return Outcome(
            record=self.answer(
                event, event_id=event_id, arrival=arrival, origin=origin, admitted=admitted, snapshot=snapshot
            )
        )

    def answer(
        self,
        event: ShopperEvent,
        *,
        event_id: str,
        arrival: float,
        origin,
        admitted: bool | None = None,
        snapshot: ServingSnapshot | None = None,
    ) -> OutputRecord:
        started = self.clock()
        snapshot = snapshot or self.holder.snapshot
        own_slot = admitted is None
        if own_slot:
            admitted = self.in_flight.try_enter()
        try:
            if not admitted:
                return self._fallback(
                    event, event_id, snapshot, FallbackReason.OVERLOADED, arrival, started, origin
                )
            return self._from_model(event, event_id, snapshot, arrival, started, origin)
        finally:
            if own_slot and admitted:
                self.in_flight.leave()

    def _from_model(
        self, event, event_id, snapshot: ServingSnapshot, arrival, started, origin
    ) -> OutputRecord:
        if snapshot.model is None:
            return self._fallback(
                event, event_id, snapshot, FallbackReason.NO_MODEL, arrival, started, origin
            )
        deadline = arrival + self.config.deadline_s
        try:
            self._check(deadline)
            vector, source = self._user_vector(event, snapshot)
            cart = event.cart()
            recommended = snapshot.recommend(vector, self.config.top_k, cart)
            anchor = event.anchor_product(snapshot.catalogue)
            similar = snapshot.similar(anchor, self.config.top_k, cart) if anchor else None
            self._check(deadline)  # a model step that ran past the deadline is not served as on time
        except DeadlinePassed:
            return self._fallback(
                event, event_id, snapshot, FallbackReason.DEADLINE, arrival, started, origin
            )
        except Exception:
            log.exception("event %s: answering from the model failed; serving the popular list", event_id)
            return self._fallback(event, event_id, snapshot, FallbackReason.ERROR, arrival, started, origin)
        record = self._record(
            event,
            event_id,
            snapshot,
            recommended=[
                RecommendedItem.model_construct(id=code, score=score) for code, score in recommended
            ],
            similar=None
            if similar is None
            else SimilarItems(
                product_code=anchor,
                similar_items=[SimilarItem.model_construct(id=c, distance=d) for c, d in similar],
                source=SimilarSource.MODEL,
            ),
            reason=None,
            source=source,
            arrival=arrival,
            started=started,
        )
        metrics.ANSWERS.labels(origin=str(origin), fallback_reason="none").inc()
        return record

    def _check(self, deadline: float) -> None:
        if self.clock() >= deadline:
            raise DeadlinePassed

    @staticmethod
    def _user_vector(event: ShopperEvent, snapshot: ServingSnapshot) -> tuple[np.ndarray, UserSource]:
        vector = snapshot.model.user_vector(event.customer_number)
        if vector is not None:
            return vector, UserSource.PUBLISHED
        # A shopper the model never saw: their features, and what their event browsed (the encoder
        # folds it in where the recipe can: the taste model's; the evaluation scores the same way).
        browsed = snapshot.model.item_vectors[snapshot.indices(event.product_codes())]
        return snapshot.model.encoder.embed(event.features(), browsed), UserSource.FEATURES

    def _fallback(
        self, event, event_id, snapshot: ServingSnapshot, reason, arrival, started, origin
    ) -> OutputRecord:
        """A whole answer without the model: the popular list, and similar items from the popular list
        of the anchor's line (precomputed at reload), so the shape never depends on the path."""
        cart = event.cart()
        items = snapshot.popular_items(self.config.top_k, cart)
        anchor = event.anchor_product(snapshot.catalogue)
        similar = None
        if anchor is not None:
            neighbours, where = snapshot.similar_fallback(anchor, self.config.top_k, cart)
            similar = SimilarItems.model_construct(
                product_code=anchor,
                similar_items=[SimilarItem.model_construct(id=c, distance=None) for c, _ in neighbours],
                source=where,
            )
        metrics.ANSWERS.labels(origin=str(origin), fallback_reason=str(reason)).inc()
        return self._record(
            event,
            event_id,
            snapshot,
            recommended=[RecommendedItem.model_construct(id=code, score=score) for code, score in items],
            similar=similar,
            reason=reason,
            source=UserSource.NONE,
            arrival=arrival,
            started=started,
        )

    # Items are built with model_construct: codes and floats from the model's own arrays need no validation.
    def _record(self, event, event_id, snapshot, *, recommended, similar, reason, source, arrival, started):
        done = self.clock()
        return OutputRecord(
            event_id=event_id,
            session_id=event.session_id,
            customer_number=event.customer_number,
            city=event.city,
            country=event.country,
            credit_limit=event.credit_limit,
            browse_history=list(event.browse_history),
            recommended_items=recommended,
            similar_items=similar,
            unknown_products=snapshot.unknown(event.product_codes()),
            products_from_features=snapshot.from_features(event.product_codes()),
            model_version=None if reason is not None else snapshot.model_version,
            popular_build=snapshot.popular_build if reason is not None else None,
            fallback=reason is not None,
            fallback_reason=reason,
            user_source=source,
            timings=Timings(
                arrived_at=utc_from_epoch(arrival),
                queued_ms=round(max(started - arrival, 0.0) * 1000, 3),
                handler_ms=round((done - started) * 1000, 3),
                total_ms=round(max(done - arrival, 0.0) * 1000, 3),
            ),
        )


def build_handler(settings: ServingSettings, *, watch: bool = True) -> Handler:
    """The handler of a serving process, on the vector store named by the connection ``retail_vectors``
    (a missing connection is a configuration error naming it; a store that is down is not)."""
    from retail_platform.serving.breaker import CircuitBreaker
    from retail_platform.serving.holder import VectorStoreClient, vectors_conninfo

    client = VectorStoreClient(vectors_conninfo())
    breaker = CircuitBreaker("vector store", settings.breaker_failures, settings.breaker_reset_s)
    holder = ModelHolder(client, breaker, settings.popular_cache, settings.poll_s)
    holder.on_swap.append(metrics.show_snapshot)
    holder.start(watch=watch)
    return Handler(holder, HandlerConfig.from_settings(settings))
