"""How the recommendation API is served: uvicorn with shedding before the queue, one or more workers.

Under overload a server that accepts everything queues requests in its sockets before the app sees
them, so a deadline measured in the app cannot help: requests time out instead of being answered
(measured: 16,509 of 20,000 at 2,000 req/s on one worker). Shedding therefore happens at the door:

* ``backlog``: the kernel's accept queue of the listening socket is bounded;
* ``limit_concurrency``: a worker holding that many connections or requests answers the next one at
  once with **503 and ``Retry-After``**, after parsing its headers and before the app runs;
* ``workers``: processes sharing the listening socket, each with its own copy of the vectors
  (13 MB at 100k customers), so a second core adds capacity.

Why 503 and not the popular list (``fallback_reason: overloaded``) for this excess: a fallback
answer echoes the event, so it must read and parse the body and serialise a record, which costs
about as much as the model's answer (the handler's model step is well under a millisecond); it
cannot be cheaper than the work it sheds. A 503 costs only the header parse, and it is what a load
balancer, a retry policy and the sales platform's own cached popular list already understand.
Within the limit the app still answers late requests from the popular list.

* **arrival, stamped by the server** (``ArrivalStampingProtocol``): a request's budget runs from when
  this process read its first bytes, minus the event loop's current lag (``LoopLag``: how late a
  timer that should fire every 25 ms fires, i.e. how long the loop was away from its sockets while
  the request waited in the kernel). The app refuses a request whose budget went waiting with 503 at
  once, before reading its body. A busy loop runs a whole batch of parsed requests one after another
  in one turn; the stamp makes the last of them count its turn's wait, which a lag sampled between
  turns cannot. So shedding needs no proxy's ``X-Request-Start`` (still honoured when earlier) and
  holds with one worker: the 503s come as soon as the loop reaches them instead of piling up.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, replace

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from retail_platform.serving.api import ARRIVED_AT, OVERLOADED_BODY, RETRY_AFTER_S, build_app
from retail_platform.serving.settings import ServingSettings

log = logging.getLogger(__name__)
LAG_SAMPLE_S = 0.025


class LoopLag:
    """How late this process's event loop runs what is due, sampled every ``LAG_SAMPLE_S``: while the
    loop is busy, that long a request's bytes may have waited in the kernel before it read them."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._task: asyncio.Task | None = None

    def ensure_sampling(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._sample(loop))

    async def _sample(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            due = loop.time() + LAG_SAMPLE_S
            await asyncio.sleep(LAG_SAMPLE_S)
            self.seconds = max(0.0, loop.time() - due)


LOOP_LAG = LoopLag()


class ArrivalStampingProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol that stamps each request when its first bytes are read, less the
    loop's lag (``scope["state"][ARRIVED_AT]``): the app's budget check then counts the time spent
    in front of it without a proxy's header."""

    def connection_made(self, transport) -> None:  # type: ignore[override]
        LOOP_LAG.ensure_sampling(self.loop)
        super().connection_made(transport)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["state"][ARRIVED_AT] = time.time() - LOOP_LAG.seconds


@dataclass(frozen=True)
class ServerOptions:
    """What the server is started with (from ``ServingSettings``, overridable per call)."""

    host: str
    port: int
    workers: int
    limit_concurrency: int
    backlog: int
    access_log: bool = False

    def uvicorn_kwargs(self) -> dict:
        return {
            "host": self.host,
            "port": self.port,
            "workers": self.workers,
            "limit_concurrency": self.limit_concurrency,
            "backlog": self.backlog,
            "access_log": self.access_log,
            "log_level": "info",
            "timeout_graceful_shutdown": 5,
            "http": f"{__name__}:ArrivalStampingProtocol",
            "loop": "uvloop",
        }


def server_options(
    settings: ServingSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    access_log: bool = False,
) -> ServerOptions:
    return ServerOptions(
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers or settings.api_workers or default_workers(),
        limit_concurrency=settings.api_limit_concurrency,
        backlog=settings.api_backlog,
        access_log=access_log,
    )


def default_workers() -> int:
    """One worker a core this process may run on, at most two: the consumer and the vector store
    need the rest of a small machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


async def overloaded(scope, receive, send) -> None:
    """uvicorn's answer past ``limit_concurrency``, with ``Retry-After`` and a JSON body."""
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(OVERLOADED_BODY)).encode()),
                (b"retry-after", str(RETRY_AFTER_S).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": OVERLOADED_BODY, "more_body": False})


def _install_overloaded_answer() -> None:
    # uvicorn answers past limit_concurrency with the module-level ASGI app `service_unavailable`
    # (plain text, no Retry-After); ours replaces it in this process. A test checks the header, so an
    # uvicorn release that moves it is caught.
    from uvicorn.protocols.http import h11_impl, httptools_impl

    for module in (httptools_impl, h11_impl):
        module.service_unavailable = overloaded


def app_factory():
    """Each worker's app (uvicorn imports this by name to start workers in their own processes)."""
    _install_overloaded_answer()
    return build_app()


def serve_api(
    settings: ServingSettings,
    *,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    access_log: bool = False,
    shared_port: bool = False,
) -> None:
    """Run the recommendation API until stopped (blocks). Configuration errors (API keys, the vector
    store's connection) surface before the server listens, in the first worker's start-up."""
    import uvicorn

    from retail_platform.serving.auth import ApiKeys
    from retail_platform.serving.holder import vectors_conninfo

    # Fail fast, in this process, with one line naming the setting, before any worker starts.
    ApiKeys.from_environment()
    vectors_conninfo()
    options = server_options(settings, host=host, port=port, workers=workers, access_log=access_log)
    log.info(
        "recommendation API on http://%s:%d: %d worker(s), limit %d connections each, backlog %d",
        options.host,
        options.port,
        options.workers,
        options.limit_concurrency,
        options.backlog,
    )
    _install_overloaded_answer()
    if shared_port:
        # One of several processes on one port, each supervised on its own: a killed one leaves the
        # others answering, where a killed uvicorn master takes every worker down with it (the soak
        # measured ~17 s without an API on a loaded machine).
        options = replace(options, workers=1)
        config = uvicorn.Config(
            "retail_platform.serving.server:app_factory", factory=True, **options.uvicorn_kwargs()
        )
        uvicorn.Server(config).run(sockets=[shared_socket(options.host, options.port, options.backlog)])
        return
    uvicorn.run("retail_platform.serving.server:app_factory", factory=True, **options.uvicorn_kwargs())


def shared_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening socket other processes of this user may bind too (SO_REUSEPORT): the kernel
    spreads new connections over the live ones."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    return sock


def main(argv: list[str]) -> int:
    from retail_platform.errors import ConfigurationError

    parser = argparse.ArgumentParser(prog="retail api", description="the recommendation API")
    parser.add_argument("--host", default=None, help="default RETAIL_API_HOST (127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="default RETAIL_API_PORT (8600)")
    parser.add_argument("--workers", type=int, default=None, help="default RETAIL_API_WORKERS")
    parser.add_argument("--access-log", action="store_true", help="log each request (path and status only)")
    parser.add_argument(
        "--shared-port",
        action="store_true",
        help="one process (one worker) of several on the port (SO_REUSEPORT), each supervised on its own",
    )
    args = parser.parse_args(argv[1:])
    try:
        settings = ServingSettings.from_env()
        serve_api(
            settings,
            host=args.host,
            port=args.port,
            workers=args.workers,
            access_log=args.access_log,
            shared_port=args.shared_port,
        )
    except ConfigurationError as exc:  # one line naming the setting, not a traceback
        print(f"retail api: {exc}", file=sys.stderr)
        return 2
    return 0
