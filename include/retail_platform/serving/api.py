"""The recommendation API (FastAPI on uvicorn): the same handler as the stream, for synchronous calls.

* ``POST /v1/recommendations``: the shopper event (the stream's format) in, the output record out;
  a malformed event gets 422 with its kind and reason (and is kept in the lake's dead letters);
* ``GET /v1/products/{product_code}/similar?k=10``: the products closest to one product;
* ``GET /health`` (the process answers), ``GET /ready`` (it has something to serve), ``GET /metrics``
  (Prometheus), ``GET /docs`` and ``/openapi.json``.

The two ``/v1`` endpoints need an API key in the ``X-API-Key`` header. The budget of a request runs
from its arrival: the earlier of the ``X-Request-Start`` header of the proxy in front (or the caller)
and the server's own stamp (``server.ArrivalStampingProtocol``: its first bytes read, less the event
loop's lag), else the moment the outermost middleware saw it; a request whose budget is spent before
the app reaches it is refused at once with 503; requests beyond the in-flight cap are answered at
once from the popular list instead of waiting.

``retail api [--host H] [--port P]``.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from pydantic import BaseModel
from starlette.requests import ClientDisconnect

from retail_platform.serving import metrics
from retail_platform.serving.auth import ApiKeys
from retail_platform.serving.events import DeadLetterKind, ShopperEvent
from retail_platform.serving.handler import Handler, InFlightLimit
from retail_platform.serving.lake_sink import BufferedLakeWriter
from retail_platform.serving.records import Origin, OutputRecord, SimilarItem
from retail_platform.serving.settings import ServingSettings

log = logging.getLogger(__name__)
# The answer to a request shed for overload (here, and by the server before the app: server.py).
RETRY_AFTER_S = 1
OVERLOADED_BODY = b'{"detail": "overloaded: retry after 1 s (the popular list is the fallback)"}'
ARRIVED_AT = "retail_arrived_at"  # the request's ``scope["state"]`` key, set by the server: epoch seconds
RECOMMEND_PATH = "/v1/recommendations"


class Refused(BaseModel):
    event_id: str
    kind: DeadLetterKind
    reason: str


class Problem(BaseModel):
    detail: str


class SimilarAnswer(BaseModel):
    product_code: str
    model_version: str
    similar_items: list[SimilarItem]


class Readiness(BaseModel):
    ready: bool
    model_version: str | None
    popular_build: str | None
    last_reload_at: str | None
    last_error: str | None
    store_circuit: str


class ArrivalMiddleware:
    """Outermost: stamps each request's arrival, counts recommendation requests in flight (from arrival,
    so time spent waiting inside the server counts), and observes the latency histogram."""

    def __init__(self, app, limit: InFlightLimit):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        arrival = _request_start(scope, time.time(), state.get(ARRIVED_AT))
        path = scope.get("path", "")
        recommending = path == RECOMMEND_PATH
        admitted = self.limit.try_enter() if recommending else None
        state["arrival"], state["admitted"] = arrival, admitted
        if recommending:  # the gauge counts recommendation requests only (never /metrics reading itself)
            metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            if recommending:
                metrics.IN_FLIGHT.dec()
            if admitted:
                self.limit.leave()
            metrics.REQUEST_SECONDS.labels(endpoint=_endpoint_label(path)).observe(
                time.perf_counter() - started
            )


def _request_start(scope, now: float, stamped: float | None = None) -> float:
    """When the request really arrived: the earlier of the server's stamp (``stamped``: its first bytes
    read, less the loop's lag) and ``X-Request-Start: t=<epoch seconds, ms or us>`` from the proxy in
    front (nginx's ``t=${msec}``) or the caller, so time queued before this process counts too. Each
    is ignored unless plausible (not in the future, under a minute old)."""
    seen = stamped if stamped is not None and now - 60 <= stamped <= now else now
    for name, value in scope.get("headers", ()):
        if name == b"x-request-start":
            try:
                stamp = float(value.decode().strip().removeprefix("t="))
            except ValueError:
                return seen
            stamp /= 1e6 if stamp > 1e14 else 1e3 if stamp > 1e11 else 1
            return min(stamp, seen) if now - 60 <= stamp <= now else seen
    return seen


class RecommendEndpoint:
    """``POST /v1/recommendations`` served right below the arrival middleware, without FastAPI's routing,
    request objects and dependency injection: the hot path costs a quarter less CPU that way, which is
    capacity at 500 requests a second on two cores. The FastAPI route of the same path documents it in
    the OpenAPI description and answers the same way (``answer``) should a request ever reach it."""

    def __init__(self, app, answer, api_keys: ApiKeys, max_bytes: int, budget_s: float):
        self.app, self.answer, self.api_keys, self.max_bytes = app, answer, api_keys, max_bytes
        self.budget_s = budget_s

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != RECOMMEND_PATH or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        if time.time() - scope["state"]["arrival"] >= self.budget_s:
            # Its whole budget went waiting in front of the app (in the kernel, the loop or a proxy):
            # refused at once, before the body is read, so a backlog drains instead of growing.
            metrics.SHED.labels(why="late").inc()
            return await _send(send, 503, OVERLOADED_BODY, ((b"retry-after", str(RETRY_AFTER_S).encode()),))
        key = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"x-api-key"), None)
        if self.api_keys.client_of(key) is None:
            return await _send(send, 401, UNAUTHORISED, ((b"www-authenticate", b"ApiKey"),))
        body = await _read_body(receive, self.max_bytes + 1)
        if body is not None:
            raw, size = body
            status, answer = self.answer(raw, scope["state"], size)
            await _send(send, status, answer)


UNAUTHORISED = b'{"detail": "a valid X-API-Key header is required"}'


async def _read_body(receive, keep: int) -> tuple[bytes, int] | None:
    """The request body (at most ``keep`` bytes kept: a larger one is refused as oversized anyway) and
    its real size; None when the caller went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if size < keep:
            chunks.append(chunk[: keep - size])
        size += len(chunk)
        if not message.get("more_body"):
            return b"".join(chunks), size


async def _send(send, status: int, body: bytes, headers: tuple = ()) -> None:
    start_headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": [*start_headers, *headers]})
    await send({"type": "http.response.body", "body": body})


def _endpoint_label(path: str) -> str:
    if path == RECOMMEND_PATH:
        return "recommendations"
    if path.startswith("/v1/products/"):
        return "similar"
    return path.strip("/") if path in ("/health", "/ready", "/metrics") else "other"


def create_app(handler: Handler, api_keys: ApiKeys, lake_writer: BufferedLakeWriter | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app):
        if lake_writer is not None:
            lake_writer.start()
        handler.warm_up()
        yield
        if lake_writer is not None:
            lake_writer.close()
        handler.holder.stop()

    app = FastAPI(
        title="Retail recommendations",
        version="1",
        description="Personalised recommendations within a deadline; the week's popular products otherwise.",
        lifespan=lifespan,
    )
    header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an API key the platform issued")

    async def client(key: str | None = Security(header)) -> str:  # async: no thread hop per request
        name = api_keys.client_of(key)
        if name is None:
            raise HTTPException(
                401, "a valid X-API-Key header is required", headers={"WWW-Authenticate": "ApiKey"}
            )
        return name

    answer = recommendation_answer(handler, lake_writer)
    _routes(app, handler, answer, client)
    max_bytes = handler.config.limits.max_bytes
    app.add_middleware(
        RecommendEndpoint,
        answer=answer,
        api_keys=api_keys,
        max_bytes=max_bytes,
        budget_s=handler.config.deadline_s,
    )
    app.add_middleware(ArrivalMiddleware, limit=handler.in_flight)  # the last added runs first
    return app


def recommendation_answer(handler: Handler, lake_writer: BufferedLakeWriter | None):
    """(status, JSON body) for one event's raw bytes: the output record, or 422 with the refusal."""

    def answer(raw: bytes, state: dict, size: int | None = None) -> tuple[int, bytes]:
        outcome = handler.handle(
            raw,
            event_id=f"api:{uuid.uuid4().hex}",
            arrival=state["arrival"],
            origin=Origin.API,
            admitted=state["admitted"],
            size=size,
        )
        body = outcome.json if outcome.record is not None else None
        if lake_writer is not None:
            lake_writer.add(body, outcome.dead_letter)
        if outcome.dead_letter is None:
            return 200, body
        letter = outcome.dead_letter
        refused = Refused(event_id=letter.event_id, kind=letter.kind, reason=letter.reason)
        return 422, refused.model_dump_json().encode()

    return answer


def _routes(app: FastAPI, handler: Handler, answer, client) -> None:
    event_schema = ShopperEvent.model_json_schema(ref_template="#/components/schemas/{model}")

    @app.post(
        RECOMMEND_PATH,
        response_model=OutputRecord,
        responses={401: {"model": Problem}, 422: {"model": Refused}},
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": event_schema}}}
        },
        summary="Recommendations for a shopper event",
    )
    async def recommend(request: Request, _client: str = Depends(client)) -> Response:
        try:
            raw = await request.body()
        except ClientDisconnect:  # the caller gave up: nobody to answer
            return Response(status_code=499)
        status, body = answer(raw, request.scope["state"])
        return Response(body, status, media_type="application/json")

    @app.get(
        "/v1/products/{product_code}/similar",
        response_model=SimilarAnswer,
        responses={401: {"model": Problem}, 404: {"model": Problem}, 503: {"model": Problem}},
        summary="Products similar to one product",
    )
    async def similar(
        product_code: str = Path(min_length=1, max_length=32),
        k: int = Query(10, ge=1, le=100),
        _client: str = Depends(client),
    ) -> SimilarAnswer:
        snapshot = handler.holder.snapshot
        if snapshot.model is None:
            raise HTTPException(503, "no model is loaded yet")
        items = snapshot.similar(product_code, k, set())
        if items is None:
            raise HTTPException(404, f"product {product_code} is not in model {snapshot.model_version}")
        return SimilarAnswer(
            product_code=product_code,
            model_version=snapshot.model_version,
            similar_items=[SimilarItem(id=c, distance=d) for c, d in items],
        )

    @app.get("/health", summary="The process answers")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get(
        "/ready",
        response_model=Readiness,
        responses={503: {"model": Readiness}},
        summary="It has something to serve",
    )
    async def ready() -> JSONResponse:
        snapshot, status = handler.holder.snapshot, handler.holder.status
        body = Readiness(
            ready=snapshot.model is not None or snapshot.popular is not None,
            model_version=snapshot.model_version,
            popular_build=snapshot.popular_build,
            last_reload_at=status.last_reload_at.isoformat() if status.last_reload_at else None,
            last_error=public_error(status.last_error),
            store_circuit=str(handler.holder.breaker.state),
        )
        return JSONResponse(body.model_dump(), 200 if body.ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def public_error(error: str | None) -> str | None:
    """What /ready may show of the holder's last error: its kind, never the message (a driver's
    message names the server's address, the user and sometimes more; the process log has it)."""
    if error is None:
        return None
    kind = error.split(":", 1)[0].strip()
    return f"{kind if kind.isidentifier() else 'error'}: the vector store could not be read (see the log)"


def build_app(settings: ServingSettings | None = None) -> FastAPI:
    from retail_platform.serving.handler import build_handler
    from retail_platform.serving.lake_sink import RecommendationsLake

    settings = settings or ServingSettings.from_env()
    api_keys = ApiKeys.from_environment()  # before anything starts: a missing key is a configuration error
    handler = build_handler(settings)
    writer = BufferedLakeWriter(
        RecommendationsLake.from_settings(settings.platform),
        "api",
        settings.lake_flush_records,
        settings.lake_flush_s,
    )
    return create_app(handler, api_keys, writer)
