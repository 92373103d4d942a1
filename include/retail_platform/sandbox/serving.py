"""The serving side on one machine: `./platform serve`, and the demonstration at the end of
`./platform run`.

`serve` runs, under supervisord (``sandbox/supervisor.py``), the sandbox's PostgreSQL (the vector
store) and Kinesis (moto), then the stream consumer and the API as programs of their own on
127.0.0.1, handing them the sandbox's connections and a generated API key (kept in
``<state>/serving/instance.json``, mode 600) the way a deployment would hand them real ones. Each is
restarted when it dies, on its kept port and data; one part's death never stops the others.
`serve` returns once all answer (like `docker compose up -d`); `./platform status` shows them,
`./platform down` stops them. ``serving_processes`` describes the consumer and the API for whoever
runs the whole platform (`./platform up`).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from retail_platform.sandbox.launcher import step
from retail_platform.sandbox.supervisor import Program, Supervisor
from retail_platform.serving.settings import ServingSettings

PARTS = {"postgres", "kinesis"}
READY_TIMEOUT_S = 90


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    argv: list[str]
    env: dict[str, str] = field(repr=False)
    log_file: Path
    url: str | None = None

    def program(self) -> Program:
        return Program(self.name, self.argv, self.env, priority=50)


def api_key_env(settings: ServingSettings) -> dict[str, str]:
    """``RETAIL_API_KEYS`` for the sandbox's API: the environment's own, else a key generated once."""
    if os.environ.get("RETAIL_API_KEYS"):
        return {}
    path = settings.state_dir / "serving" / "instance.json"
    doc = json.loads(path.read_text()) if path.exists() else {}
    if "api_key" not in doc:
        doc["api_key"] = secrets.token_urlsafe(24)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds a secret: owner only
        with os.fdopen(fd, "w") as out:
            json.dump(doc, out)
        os.replace(tmp, path)
    return {"RETAIL_API_KEYS": f"sandbox:{doc['api_key']}"}


def sandbox_env(settings: ServingSettings) -> dict[str, str]:
    """Start the parts the serving side needs (unless the environment names its own); their variables."""
    from retail_platform.sandbox import launcher

    return launcher.start(only=PARTS) | api_key_env(settings)


def serving_processes(
    settings: ServingSettings, env: dict[str, str], api_port: int | None = None
) -> list[ServiceSpec]:
    """The consumer and the API, as processes to start with ``env`` (the sandbox's connections)."""
    full = dict(os.environ) | env
    logs = settings.state_dir / "logs"
    retail = [sys.executable, "-m", "retail_platform.cli"]
    host, port = settings.api_host, api_port or settings.api_port
    return [
        ServiceSpec("consumer", [*retail, "consumer"], full, logs / "serving-consumer.log"),
        ServiceSpec(
            "api",
            [*retail, "api", "--host", host, "--port", str(port)],
            full,
            logs / "serving-api.log",
            f"http://{host}:{port}",
        ),
    ]


def start(spec: ServiceSpec) -> subprocess.Popen:
    spec.log_file.parent.mkdir(parents=True, exist_ok=True)
    with spec.log_file.open("ab") as log:
        return subprocess.Popen(
            spec.argv, env=spec.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = READY_TIMEOUT_S) -> dict:
    """Once the API answers: its readiness document (not ready yet is a 503 with the same document)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as not_ready:
            return json.loads(not_ready.read())
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop(processes: list[subprocess.Popen], timeout: float = 15) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def api_processes(api: ServiceSpec, settings: ServingSettings) -> list[ServiceSpec]:
    """The API as one supervised process a worker (``api``, ``api-2``, ...) sharing its port: a
    killed one is restarted while the others answer."""
    from retail_platform.serving.server import default_workers

    workers = settings.api_workers or default_workers()
    argv = [*api.argv, "--workers", "1", "--shared-port"]
    return [
        replace(api, name=api.name if n == 1 else f"{api.name}-{n}", argv=argv) for n in range(1, workers + 1)
    ]


def supervise_serving(supervisor: Supervisor, settings: ServingSettings, env: dict[str, str]) -> str:
    """The consumer and the API under ``supervisor``; returns the API's address once it answers."""
    consumer, api = serving_processes(settings, env)
    specs = [consumer, *api_processes(api, settings)]
    supervisor.add(*(spec.program() for spec in specs))
    supervisor.wait_running(api.name, timeout=READY_TIMEOUT_S)
    wait_ready(api.url)
    return api.url


def main(argv: list[str]) -> int:
    from retail_platform.sandbox import launcher

    parser = argparse.ArgumentParser(
        prog="retail serve", description="the stream, vector store, consumer and API, supervised"
    )
    parser.parse_args(argv[1:])
    settings = ServingSettings.from_env()
    supervisor = Supervisor(settings.state_dir)
    with step("supervisord"):
        supervisor.start()
    with step("the sandbox's PostgreSQL + pgvector and Kinesis (moto), supervised"):
        env = launcher.supervise(supervisor, only=PARTS) | api_key_env(settings)
    with step("the stream consumer and the recommendation API, supervised"):
        url = supervise_serving(supervisor, settings, env)
    _print_where(settings, supervisor, url, wait_ready(url), env)
    return 0


def _print_where(
    settings: ServingSettings, supervisor: Supervisor, url: str, readiness: dict, env: dict
) -> None:
    print(f"\nrecommendation API  {url}  (docs {url}/docs, metrics {url}/metrics)")
    print(f"  serving model {readiness.get('model_version')}, popular list {readiness.get('popular_build')}")
    print(f"  API key: RETAIL_API_KEYS, or 'api_key' in {settings.state_dir / 'serving' / 'instance.json'}")
    print(f"stream consumer     {settings.events_stream} -> {settings.recommendations_stream} and the lake")
    print(
        f"  endpoint {(os.environ | env).get('AWS_ENDPOINT_URL_KINESIS', 'AWS')}; "
        "events: `./platform retail shoppers --rate 2`"
    )
    print(f"logs                {supervisor.log_dir}/{{consumer,api,postgres,kinesis,announcer}}.log")
    print("`./platform status` shows every part; `./platform down` stops them")


# ---------------------------------------------------------------------- the demonstration
def demonstrate(settings: ServingSettings | None = None, events: int = 4) -> None:
    """A few events through the stream and one request to the API, their answers shown (./platform run)."""
    from retail_platform.sandbox.processes import free_port
    from retail_platform.serving.simulator import Shoppers, load_catalogue

    settings = settings or ServingSettings.from_env()
    env = sandbox_env(settings)
    # A port of its own: a `./platform serve` may hold the configured one.
    specs = serving_processes(settings, env, api_port=free_port())
    offsets = {spec.name: spec.log_file.stat().st_size if spec.log_file.exists() else 0 for spec in specs}
    processes = [start(spec) for spec in specs]
    try:
        api = specs[1]
        readiness = wait_ready(api.url, processes[1])
        _wait_for_line(specs[0].log_file, offsets["consumer"], "consuming", processes[0])
        print(
            f"  API {api.url}: model {readiness['model_version']}, popular list {readiness['popular_build']}"
        )
        shoppers = Shoppers(load_catalogue(settings.platform), new_share=0.25, malformed_share=0.0, seed=7)
        docs = [shoppers.event() for _ in range(events)]
        client = _kinesis(env)
        since = datetime.now(UTC)
        from retail_platform.serving.stream import put_all

        put_all(client, settings.events_stream, [(d["session_id"], json.dumps(d).encode()) for d in docs])
        outputs = _read_outputs(
            client, settings.recommendations_stream, since, {d["session_id"] for d in docs}
        )
        for doc in docs:
            _show_output(outputs.get(doc["session_id"]), doc)
        _show_api_call(
            api,
            env["RETAIL_API_KEYS"] if "RETAIL_API_KEYS" in env else os.environ["RETAIL_API_KEYS"],
            shoppers.event(),
        )
    finally:
        stop(processes)


def _wait_for_line(log_file: Path, offset: int, text: str, process, timeout: float = READY_TIMEOUT_S) -> None:
    """Until the process logged ``text`` (after ``offset``): events put before the consumer reads would
    spend their budget waiting for it to start."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the consumer exited with {process.returncode} (log: {log_file})")
        with log_file.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return
        time.sleep(0.2)
    raise RuntimeError(f"the consumer did not start within {timeout:.0f} s (log: {log_file})")


def _kinesis(env: dict[str, str]):
    import boto3

    merged = os.environ | env
    return boto3.client(
        "kinesis",
        endpoint_url=merged.get("AWS_ENDPOINT_URL_KINESIS"),
        region_name=merged.get("AWS_DEFAULT_REGION", "us-east-1"),
        aws_access_key_id=merged.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=merged.get("AWS_SECRET_ACCESS_KEY"),
    )


def _read_outputs(
    client, stream: str, since: datetime, sessions: set[str], timeout: float = 30
) -> dict[str, dict]:
    from retail_platform.serving.stream import shard_ids

    iterators = [
        client.get_shard_iterator(
            StreamName=stream, ShardId=s, ShardIteratorType="AT_TIMESTAMP", Timestamp=since
        )["ShardIterator"]
        for s in shard_ids(client, stream)
    ]
    found: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while sessions - set(found) and time.monotonic() < deadline:
        for i, iterator in enumerate(iterators):
            response = client.get_records(ShardIterator=iterator, Limit=1000)
            iterators[i] = response["NextShardIterator"]
            for record in response["Records"]:
                doc = json.loads(record["Data"])
                if doc["session_id"] in sessions:
                    found[doc["session_id"]] = doc
        time.sleep(0.1)
    return found


def _show_output(record: dict | None, event: dict) -> None:
    cart = [i["product_code"] for i in event["browse_history"] if i["in_shopping_cart"]]
    print(
        f"\n  event: customer {event['customer_number']} ({event['city']}, {event['country']}), cart {cart or '-'}"
    )
    if record is None:
        print("    no output record arrived within 30 s")
        return
    served = (
        f"fallback ({record['fallback_reason']})"
        if record["fallback"]
        else f"model {record['model_version']}"
    )
    items = ", ".join(f"{i['id']} {i['score']:.2f}" for i in record["recommended_items"][:5])
    print(
        f"    {served}, {record['user_source']} user vector, {record['timings']['total_ms']:.1f} ms from arrival"
    )
    print(f"    recommended: {items}")
    if record["similar_items"]:
        similar = ", ".join(
            # distance is null when the fallback's popular list answered (similar_items.source says which)
            f"{i['id']}" + ("" if i["distance"] is None else f" {i['distance']:.2f}")
            for i in record["similar_items"]["similar_items"][:3]
        )
        print(f"    similar to {record['similar_items']['product_code']}: {similar}")


def _show_api_call(api: ServiceSpec, keys: str, event: dict) -> None:
    key = keys.split(",")[0].partition(":")[2] or keys.split(",")[0]
    request = urllib.request.Request(
        f"{api.url}/v1/recommendations",
        data=json.dumps(event).encode(),
        headers={"Content-Type": "application/json", "X-API-Key": key},
        method="POST",
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=5) as response:
        record = json.loads(response.read())
    print(
        f"\n  POST {api.url}/v1/recommendations answered {response.status} in {(time.perf_counter() - started) * 1000:.0f} ms:"
    )
    _show_output(record, event)
