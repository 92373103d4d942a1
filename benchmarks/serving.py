"""Serving latency on this machine: the handler, the API at a fixed arrival rate, the stream end to
end, the same with the vector store down, and a bare FastAPI + uvicorn reference.

    ./platform python benchmarks/serving.py [--state-dir .state/bench-serving] [--rate 500] [--seconds 60]

A prod-sized version (100,000 customers, 3,000 products, 32 dimensions, random vectors: latency does
not depend on what the vectors learnt) is published into the sandbox's PostgreSQL + pgvector in its
own state folder; the API and the consumer load it from there, as in production. The load generator
is open-loop (aiohttp): request i is due at i/rate seconds whatever the answers do, and its latency
runs from when it was due, so a slow server cannot slow the load down and hide its own queueing.
It runs on the same machine as the server.

    ./platform python benchmarks/serving.py --shedding [--seconds 10] [--rates 200,400,...]

Shedding before the queue: the load generator pinned to one core and the API to the other
(taskset); the rate one worker sustains at p99 <= 50 ms, then three times that rate with no
limits, and with the server's shedding (``retail_platform.serving.server``) on 1 and 2 workers.
A 503 with Retry-After counts as an answer (a refusal at the door); a time-out never does. The
overload runs send no ``X-Request-Start`` (the server stamps arrivals itself: no proxy in front);
``--proxy-stamp`` sends it, as a proxy in front would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-" + "k" * 26
CUSTOMERS, PRODUCTS, COUNTRIES = (
    100_000,
    3_000,
    ("USA", "France", "Germany", "Japan", "Spain", "UK", "Australia"),
)


def percentiles(values_ms: list[float]) -> str:
    if not values_ms:
        return "no answers"
    v = np.asarray(values_ms)
    return f"p50 {np.percentile(v, 50):.1f} ms, p99 {np.percentile(v, 99):.1f} ms, max {v.max():.1f} ms"


# ---------------------------------------------------------------------- the version
def prod_payload(version: str):
    from retail_platform.vectors.store import VersionPayload

    rng = np.random.default_rng(7)
    users = rng.normal(scale=0.3, size=(CUSTOMERS, 32)).astype(np.float32)
    users[:, -1] = 1.0
    features = (
        [f"country={c.casefold()}" for c in COUNTRIES] + [f"credit=q{i}" for i in range(5)] + ["credit=zero"]
    )
    feature_vectors = rng.normal(scale=0.3, size=(len(features), 32)).astype(np.float32)
    feature_vectors[:, -1] = 0.0
    return VersionPayload(
        version=version,
        customer_numbers=np.arange(1, CUSTOMERS + 1, dtype=np.int64),
        user_vectors=users,
        product_codes=tuple(f"S{i // 100:02d}_{i:05d}" for i in range(PRODUCTS)),
        item_vectors=rng.normal(scale=0.3, size=(PRODUCTS, 32)).astype(np.float32),
        feature_names=tuple(features),
        feature_vectors=feature_vectors,
        encoder_spec={"credit_limit_edges": [20000.0, 50000.0, 80000.0, 120000.0]},
        training_build="benchmark",
        metrics={},
    )


def popular(codes) -> object:
    from retail_platform.vectors.model import PopularList, PopularProduct

    return PopularList("bench", tuple(PopularProduct(i + 1, c, 100.0 - i) for i, c in enumerate(codes[:50])))


def events(codes, n: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        known = rng.random() < 0.8
        browse = rng.sample(codes, rng.randint(1, 6))
        out.append(
            json.dumps(
                {
                    "session_id": f"bench-{seed}-{i}",
                    "customer_number": rng.randint(1, CUSTOMERS) if known else CUSTOMERS + 1 + i,
                    "city": "Pasadena",
                    "country": rng.choice(COUNTRIES),
                    "credit_limit": rng.choice([0, 30000, 90000]),
                    "browse_history": [
                        {"product_code": c, "quantity": "1", "in_shopping_cart": rng.random() < 0.3}
                        for c in browse
                    ],
                }
            ).encode()
        )
    return out


# ---------------------------------------------------------------------- the handler, in process
def bench_handler(payload, bodies: list[bytes]) -> None:
    from retail_platform.serving.breaker import CircuitBreaker
    from retail_platform.serving.handler import Handler, HandlerConfig
    from retail_platform.serving.holder import ModelHolder
    from retail_platform.serving.records import Origin
    from retail_platform.serving.search import ServingSnapshot
    from retail_platform.vectors.encoder import FeatureEncoder
    from retail_platform.vectors.model import ModelVersion

    model = ModelVersion(
        payload.version,
        payload.customer_numbers,
        payload.user_vectors,
        payload.product_codes,
        payload.item_vectors,
        FeatureEncoder(payload.encoder_spec, payload.feature_names, payload.feature_vectors),
    )
    holder = ModelHolder(None, CircuitBreaker("none"), Path("/nonexistent"), 10)
    holder.snapshot = ServingSnapshot.build(model, popular(payload.product_codes))
    handler = Handler(holder, HandlerConfig(deadline_s=10))
    for body in bodies[:500]:  # warm up
        handler.handle(body, event_id="w", arrival=time.time(), origin=Origin.API)
    timings, cpu = [], []
    for body in bodies:
        started, started_cpu = time.perf_counter(), time.thread_time()
        outcome = handler.handle(body, event_id="b", arrival=time.time(), origin=Origin.API)
        assert outcome.json  # serialised, as every entry point sends it
        cpu.append((time.thread_time() - started_cpu) * 1000)
        timings.append((time.perf_counter() - started) * 1000)
        assert outcome.record is not None and not outcome.record.fallback
    print(f"handler, in process ({len(bodies):,} events, 80% known customers): {percentiles(timings)}")
    # CPU time of the thread: the same calls without the time the OS gave the cores to other processes.
    print(f"handler, CPU time of the same calls: {percentiles(cpu)}")


# ---------------------------------------------------------------------- the API under load
async def open_loop(
    url: str,
    bodies: list[bytes],
    rate: float,
    seconds: float,
    path: str = "/v1/recommendations",
    parse: bool = True,
    timeout_s: float = 10.0,
    stamp: bool = True,
) -> dict:
    import aiohttp

    n = int(rate * seconds)
    loop = asyncio.get_running_loop()
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    latencies, refused, reasons, errors = [], [], Counter(), Counter()
    connector = aiohttp.TCPConnector(limit=256)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(i: int, due: float):
            try:
                # When the request was due, as a proxy in front would stamp it: queueing counts.
                stamped = headers | (
                    {"X-Request-Start": f"t={wall_start + (due - start):.6f}"} if stamp else {}
                )
                async with session.post(
                    f"{url}{path}", data=bodies[i % len(bodies)], headers=stamped
                ) as response:
                    body = await response.read()
                    took = (loop.time() - due) * 1000
                    if response.status == 503 and response.headers.get("Retry-After"):
                        refused.append(took)  # shed at the door: an answer, not a failure
                        return
                    if response.status != 200:
                        errors[response.status] += 1
                        return
                    latencies.append(took)
                    if parse:
                        reasons[json.loads(body)["fallback_reason"] or "model"] += 1
            except Exception as exc:  # counted, not raised: the run goes on
                errors[type(exc).__name__] += 1

        start = loop.time() + 0.1
        wall_start = time.time() + 0.1
        tasks = []
        for i in range(n):
            due = start + i / rate
            if (delay := due - loop.time()) > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
    within = sum(1 for v in latencies if v <= 1000)
    refused_within = sum(1 for v in refused if v <= 1000)
    return {
        "sent": n,
        "latencies": latencies,
        "refused": refused,
        "reasons": reasons,
        "errors": errors,
        "within_1s": within,
        "answered_within_1s": within + refused_within,
    }


def report_load(title: str, result: dict) -> None:
    share = result["within_1s"] / result["sent"] * 100
    reasons = ", ".join(f"{k} {v}" for k, v in result["reasons"].most_common()) or "-"
    errors = ", ".join(f"{k} {v}" for k, v in result["errors"].items()) or "none"
    refused = result.get("refused") or []
    shed = ""
    if refused:
        answered = result["answered_within_1s"] / result["sent"] * 100
        shed = f"; 503 + Retry-After {len(refused):,} ({percentiles(refused)}); any answer within 1 s {answered:.1f}%"
    print(
        f"{title}: {percentiles(result['latencies'])}; {share:.1f}% answered (200) within 1 s; "
        f"answers: {reasons}{shed}; errors: {errors}"
    )


def start_api(env: dict, port: int, log: Path, cpus: str | None = None) -> subprocess.Popen:
    """``retail api`` on ``port``; ``cpus``: pinned there with taskset (its workers too)."""
    from retail_platform.sandbox.serving import wait_ready

    pin = ["taskset", "-c", cpus] if cpus else []
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*pin, sys.executable, "-m", "retail_platform.cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wait_ready(f"http://127.0.0.1:{port}", process)
    return process


REFERENCE_APP = """
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response
app = FastAPI()
BODY = b'{"recommended_items": [' + b','.join([b'{"id": "S10_1678", "score": 1.5}'] * 10) + b']}'
@app.post("/v1/recommendations")
async def answer(request: Request):
    await request.body()
    return Response(BODY, media_type="application/json")
uvicorn.run(app, host="127.0.0.1", port=int(__import__("sys").argv[1]), log_level="warning", access_log=False)
"""


def reference(port: int, bodies, rate: float, seconds: float) -> None:
    import urllib.error
    import urllib.request

    process = subprocess.Popen([sys.executable, "-c", REFERENCE_APP, str(port)])
    try:
        for _ in range(150):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break  # it answers (404 at /)
            except OSError:
                time.sleep(0.2)
        result = asyncio.run(open_loop(f"http://127.0.0.1:{port}", bodies, rate, seconds, parse=False))
        report_load(
            f"reference: bare FastAPI + uvicorn, fixed answer, {rate:.0f} req/s for {seconds:.0f} s", result
        )
    finally:
        process.terminate()
        process.wait()


# ---------------------------------------------------------------------- the stream end to end
def stream_latency(env: dict, bodies: list[bytes], rate: float, seconds: float) -> dict:
    """Put events at ``rate``; a reader polls the output stream every 50 ms; put -> output latency."""
    import boto3

    from retail_platform.serving.stream import put_all, shard_ids

    client = boto3.client(
        "kinesis",
        endpoint_url=env["AWS_ENDPOINT_URL_KINESIS"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )
    out_stream, in_stream = env["RETAIL_RECOMMENDATIONS_STREAM"], env["RETAIL_EVENTS_STREAM"]
    put_at: dict[str, float] = {}
    got: dict[str, tuple[float, dict]] = {}
    stop = threading.Event()

    def reader():
        from datetime import UTC, datetime

        since = datetime.now(UTC)
        iterators = [
            client.get_shard_iterator(
                StreamName=out_stream, ShardId=s, ShardIteratorType="AT_TIMESTAMP", Timestamp=since
            )["ShardIterator"]
            for s in shard_ids(client, out_stream)
        ]
        while not stop.is_set():
            for i, iterator in enumerate(iterators):
                response = client.get_records(ShardIterator=iterator, Limit=1000)
                iterators[i] = response["NextShardIterator"]
                now = time.time()
                for record in response["Records"]:
                    doc = json.loads(record["Data"])
                    got.setdefault(doc["session_id"], (now, doc))
            time.sleep(0.05)

    thread = threading.Thread(target=reader)
    thread.start()
    time.sleep(1)
    started, sent = time.monotonic(), 0
    while (elapsed := time.monotonic() - started) < seconds:
        batch = []
        while sent + len(batch) < rate * elapsed:
            batch.append(bodies[(sent + len(batch)) % len(bodies)])
        if batch:
            now = time.time()
            keyed = []
            for body in batch:
                doc = json.loads(body)
                doc["session_id"] = f"s-{sent}-{len(keyed)}"
                put_at[doc["session_id"]] = now
                keyed.append((doc["session_id"], json.dumps(doc).encode()))
            put_all(client, in_stream, keyed)
            sent += len(batch)
        time.sleep(0.02)
    time.sleep(3)
    stop.set()
    thread.join()
    latencies = [(got[s][0] - t) * 1000 for s, t in put_at.items() if s in got]
    reasons = Counter(got[s][1]["fallback_reason"] or "model" for s in put_at if s in got)
    within = sum(1 for v in latencies if v <= 1000)
    return {
        "sent": len(put_at),
        "latencies": latencies,
        "reasons": reasons,
        "errors": Counter(),
        "within_1s": within,
    }


def start_consumer(env: dict, log: Path) -> subprocess.Popen:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "retail_platform.cli", "consumer"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    time.sleep(8)  # start-up: imports and the version's load
    return process


# ---------------------------------------------------------------------- shedding before the queue
NO_LIMITS = {"RETAIL_API_LIMIT_CONCURRENCY": "1000000", "RETAIL_API_BACKLOG": "2048"}


def pin_cores() -> tuple[str | None, str | None]:
    """(load generator's core, server's cores): one each when the machine has two or more."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return None, None
    os.sched_setaffinity(0, {cores[0]})  # this process generates the load
    return str(cores[0]), ",".join(str(c) for c in cores[1:])


def with_api(env: dict, logs: Path, name: str, cpus: str | None, run):
    from retail_platform.sandbox.processes import free_port

    port = free_port()
    api = start_api(env, port, logs / f"bench-api-{name}.log", cpus)
    try:
        url = f"http://127.0.0.1:{port}"
        asyncio.run(open_loop(url, BODIES, 50, 2))  # warm up
        return run(url)
    finally:
        api.terminate()
        api.wait()


def sustained_rate(env: dict, logs: Path, cpus, rates: list[float], seconds: float) -> float:
    """The highest of ``rates`` one worker answers with p99 <= 50 ms, every request answered by 200."""

    def run(url):
        best = rates[0]
        for rate in rates:
            result = asyncio.run(open_loop(url, BODIES, rate, seconds))
            report_load(f"  one worker, {rate:.0f} req/s for {seconds:.0f} s", result)
            p99 = np.percentile(result["latencies"], 99) if result["latencies"] else float("inf")
            if p99 > 50 or result["errors"] or result["refused"] or len(result["latencies"]) < result["sent"]:
                break
            best = rate
        return best

    return with_api(env | {"RETAIL_API_WORKERS": "1"} | NO_LIMITS, logs, "capacity", cpus, run)


def shedding(
    env: dict,
    logs: Path,
    rates: list[float],
    seconds: float,
    timeout_s: float,
    only_defaults: bool = False,
    proxy_stamp: bool = False,
) -> None:
    """The rate one worker sustains (p99 <= 50 ms), then three times that without limits and with the
    server's shedding (1 and 2 workers), the server pinned to its own core(s), the load to another."""
    load_cpu, server_cpus = pin_cores()
    print(f"shedding: load generator on core {load_cpu}, server on core(s) {server_cpus} (taskset)")
    sustained = sustained_rate(env, logs, server_cpus, rates, seconds)
    over = sustained * 3
    print(f"one worker sustains {sustained:.0f} req/s at p99 <= 50 ms; overload: {over:.0f} req/s")
    print(f"overload requests {'carry' if proxy_stamp else 'carry no'} X-Request-Start")
    runs = [
        ("uvicorn limits off, 1 worker", {"RETAIL_API_WORKERS": "1"} | NO_LIMITS),
        ("defaults, 1 worker", {"RETAIL_API_WORKERS": "1"}),
        ("defaults, 2 workers", {"RETAIL_API_WORKERS": "2"}),
        ("limit 64 connections, 1 worker", {"RETAIL_API_WORKERS": "1", "RETAIL_API_LIMIT_CONCURRENCY": "64"}),
    ]
    if only_defaults:
        runs = runs[1:2]
    for title, extra in runs:

        def run(url, title=title):
            result = asyncio.run(
                open_loop(url, BODIES, over, seconds * 2, timeout_s=timeout_s, stamp=proxy_stamp)
            )
            report_load(
                f"  {title}, {over:.0f} req/s for {seconds * 2:.0f} s (timeout {timeout_s:g} s)", result
            )

        with_api(env | extra, logs, f"overload-{runs.index((title, extra))}", server_cpus, run)


# ---------------------------------------------------------------------- the run
BODIES: list[bytes] = []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-serving"))
    parser.add_argument("--rate", type=float, default=500.0, help="API requests a second")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the main API run")
    parser.add_argument("--stream-rate", type=float, default=100.0, help="events a second on the stream")
    parser.add_argument("--handler-only", action="store_true", help="only the in-process handler figures")
    parser.add_argument(
        "--shedding", action="store_true", help="only the overload runs: capacity, then 3x it, pinned"
    )
    parser.add_argument(
        "--rates", default="200,400,600,800,1000,1200,1400", help="--shedding: rates tried for capacity"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="--shedding: the client's timeout (s)")
    parser.add_argument("--smoke", action="store_true", help="--shedding: only the defaults on one worker")
    parser.add_argument(
        "--proxy-stamp", action="store_true", help="--shedding: overload requests carry X-Request-Start"
    )
    args = parser.parse_args()
    os.environ["RETAIL_STATE_DIR"] = str(Path(args.state_dir).resolve())
    from retail_platform.sandbox.kinesis import LocalKinesis
    from retail_platform.sandbox.postgres import LocalPostgres
    from retail_platform.sandbox.processes import free_port
    from retail_platform.serving.holder import vectors_conninfo
    from retail_platform.serving.settings import ServingSettings
    from retail_platform.vectors import store

    state = Path(os.environ["RETAIL_STATE_DIR"])
    logs = state / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    postgres = LocalPostgres.from_settings().ensure_running()
    # The overload runs need no stream: no Kinesis for them.
    kinesis = None if args.shedding else LocalKinesis.from_settings().ensure_running()
    env = dict(os.environ) | postgres.connection_env() | (kinesis.connection_env() if kinesis else {})
    env |= {
        "RETAIL_API_KEYS": f"bench:{API_KEY}",
        "RETAIL_LAKE_URI": str(state / "lake"),
        "RETAIL_SERVING_POLL_S": "2",
    }
    serving = ServingSettings.from_env()
    env |= {
        "RETAIL_EVENTS_STREAM": serving.events_stream,
        "RETAIL_RECOMMENDATIONS_STREAM": serving.recommendations_stream,
    }
    os.environ.update(postgres.connection_env())
    payload = prod_payload(f"bench_{int(time.time())}")
    started = time.perf_counter()
    store.publish(vectors_conninfo(), payload, popular(payload.product_codes))
    print(
        f"published {CUSTOMERS:,} customers x {PRODUCTS:,} products in {time.perf_counter() - started:.1f} s"
    )
    bodies = events(list(payload.product_codes), 20_000)
    BODIES[:] = bodies
    if args.shedding:
        try:
            rates = [float(r) for r in args.rates.split(",")]
            shedding(
                env,
                logs,
                rates,
                args.seconds,
                args.timeout,
                only_defaults=args.smoke,
                proxy_stamp=args.proxy_stamp,
            )
        finally:
            postgres.stop()
        print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
        return 0

    bench_handler(payload, bodies)
    if args.handler_only:
        postgres.stop()
        kinesis.stop()
        return 0
    port = free_port()
    api = start_api(env, port, logs / "bench-api.log")
    url = f"http://127.0.0.1:{port}"
    processes = [api]
    try:
        asyncio.run(open_loop(url, bodies, 100, 3, "/v1/recommendations"))  # warm up
        result = asyncio.run(open_loop(url, bodies, args.rate, args.seconds, "/v1/recommendations"))
        report_load(f"API, {args.rate:.0f} req/s for {args.seconds:.0f} s", result)
        low = args.rate / 2.5
        result = asyncio.run(open_loop(url, bodies, low, 30))
        report_load(f"API, {low:.0f} req/s for 30 s", result)
        reference(free_port(), bodies, args.rate, min(args.seconds, 30))

        consumer = start_consumer(env, logs / "bench-consumer.log")
        processes.append(consumer)
        report_load(
            f"stream, put -> output record read at a 50 ms poll, {args.stream_rate:.0f} events/s for 30 s",
            stream_latency(env, bodies, args.stream_rate, 30),
        )

        os.kill(postgres.pid(), signal.SIGKILL)
        print("-- the vector store killed (kill -9); the API and the consumer keep the version in memory")
        report_load(
            f"API, store down, {args.rate:.0f} req/s for 30 s",
            asyncio.run(open_loop(url, bodies, args.rate, 30, "/v1/recommendations")),
        )
        report_load("stream, store down, 30 s", stream_latency(env, bodies, args.stream_rate, 30))
        cold_port = free_port()
        cold = start_api(env, cold_port, logs / "bench-api-cold.log")
        processes.append(cold)
        report_load(
            f"API started with the store down (popular list from disk), {args.rate:.0f} req/s for 30 s",
            asyncio.run(
                open_loop(f"http://127.0.0.1:{cold_port}", bodies, args.rate, 30, "/v1/recommendations")
            ),
        )
        cold.terminate()
        report_load(
            f"API overloaded: {args.rate * 3:.0f} req/s for 15 s",
            asyncio.run(open_loop(url, bodies, args.rate * 3, 15, "/v1/recommendations")),
        )
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        postgres.ensure_running()
        postgres.stop()
        kinesis.stop()
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
