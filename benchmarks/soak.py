"""Soak test with faults: the platform running as a service, steady traffic, every part killed in turn.

    python benchmarks/soak.py --stack up --minutes 30 --event-rate 20 --api-rate 20 --live 2
    python benchmarks/soak.py --stack serve --minutes 1 --kill consumer --smoke      (the suite's smoke)

It starts the platform (`retail up --live RATE --no-dashboard`, or `retail serve`) in a state folder
of its own, puts shopper events on the stream and sends API requests at steady rates, and every
``--kill-every`` seconds sends SIGKILL to the next part (scheduler, API server, DAG processor,
triggerer, MariaDB, PostgreSQL, moto, consumer, API). Measured independently of the platform (its
own clients, not the supervisor's view):

* the time each part took to answer again (its port, health endpoint or a query);
* events accepted by the stream and answered exactly once in the lake (moto loses what it held
  and nobody had read when it is killed: counted apart, see docs/notes/ops.md);
* API answers within 1 s (goal ≥ 99.9%), and none timed out;
* with `up`: scheduled extraction runs lost (failed, goal 0) and the data age of the marts
  (now − newest order in the published warehouse, sampled each minute; goal ≤ 15 minutes outside a
  killed source's window).

The report is JSON on stdout (and ``--markdown`` rows for the table in docs/notes/ops.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALL_PARTS = (
    "airflow-scheduler",
    "airflow-api-server",
    "airflow-dag-processor",
    "airflow-triggerer",
    "mariadb",
    "postgres",
    "kinesis",
    "consumer",
    "api",
)
SERVE_PARTS = ("consumer", "api", "kinesis", "postgres")
API_KEY = "soak-" + "k" * 24
DEADLINE_S = 1.0


# ---------------------------------------------------------------------- traffic
@dataclass
class Traffic:
    """The producer's and the API client's records, shared with the report."""

    accepted: list[str] = field(default_factory=list)
    put_errors: int = 0
    lost_with_kinesis: set[str] = field(default_factory=set)
    api: list[tuple[float, float | None, int | str]] = field(default_factory=list)  # at, seconds, status
    stop: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)


def produce(traffic: Traffic, endpoint_of, stream: str, rate: float) -> None:
    from retail_platform.sandbox.kinesis import _client

    prefix, n, client = f"soak-{uuid.uuid4().hex[:6]}-", 0, None
    while not traffic.stop.is_set():
        if traffic.paused.is_set():
            time.sleep(0.05)
            continue
        session = f"{prefix}{n}"
        doc = _event(session, n)
        try:
            client = client or _client(endpoint_of())
            response = client.put_records(
                StreamName=stream, Records=[{"PartitionKey": session, "Data": json.dumps(doc)}]
            )
            if not response.get("FailedRecordCount"):
                traffic.accepted.append(session)
                n += 1
        except Exception:
            traffic.put_errors += 1
            client = None
        time.sleep(1 / rate)


def _event(session: str, n: int) -> dict:
    return {
        "session_id": session,
        "customer_number": 103 + n % 100,
        "city": "Pasadena",
        "country": "USA",
        "credit_limit": 59811,
        "browse_history": [{"product_code": "S10_1678", "quantity": "1", "in_shopping_cart": True}],
    }


def request_api(traffic: Traffic, url: str, rate: float) -> None:
    import httpx

    n = 0
    with httpx.Client(timeout=10) as client:
        while not traffic.stop.is_set():
            n += 1
            started = time.monotonic()
            try:
                status = client.post(
                    f"{url}/v1/recommendations",
                    json=_event(f"api-{n}", n),
                    headers={"X-API-Key": API_KEY},
                ).status_code
                traffic.api.append((started, time.monotonic() - started, status))
            except httpx.HTTPError as exc:
                traffic.api.append((started, None, type(exc).__name__))
            time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))


# ---------------------------------------------------------------------- the platform under test
class Platform:
    def __init__(self, state: Path, stack: str, live: float):
        self.state, self.stack, self.live = state, stack, live
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        from retail_platform.sandbox.processes import free_port

        env = os.environ | {
            "RETAIL_PROJECT_DIR": str(ROOT),
            "RETAIL_STATE_DIR": str(self.state),
            "AIRFLOW_HOME": str(self.state / "airflow"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.state / "airflow" / "logs"),
            "RETAIL_LAKE_URI": str(self.state / "lake"),
            "RETAIL_DUCKDB_PATH": str(self.state / "warehouse" / "retail.duckdb"),
            "RETAIL_ALERTS_FILE": str(self.state / "alerts.jsonl"),
            "RETAIL_API_PORT": str(free_port()),
            "RETAIL_AIRFLOW_PORT": str(free_port()),
            "RETAIL_API_KEYS": f"soak:{API_KEY}",
        }
        for name in [n for n in env if n.startswith(("AIRFLOW_CONN_", "AWS_", "AIRFLOW__DATABASE__"))]:
            del env[name]
        return env

    @property
    def supervisor(self):
        from retail_platform.sandbox.supervisor import Supervisor

        return Supervisor(self.state)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.env['RETAIL_API_PORT']}"

    @property
    def airflow_url(self) -> str:
        return f"http://127.0.0.1:{self.env['RETAIL_AIRFLOW_PORT']}"

    def kinesis_endpoint(self) -> str:
        from retail_platform.sandbox.kinesis import LocalKinesis

        return LocalKinesis(self.state / "kinesis", ()).endpoint

    def start(self) -> float:
        started = time.monotonic()
        if self.stack == "up":
            argv = ["up", "--no-dashboard"] + (["--live", str(self.live)] if self.live else [])
        else:
            argv = ["serve"]
        result = subprocess.run(
            [sys.executable, "-m", "retail_platform.cli", *argv], env=self.env, text=True, capture_output=True
        )
        if result.returncode != 0:
            raise SystemExit(
                f"`retail {' '.join(argv)}` failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        return time.monotonic() - started

    def stop(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "retail_platform.cli", "down"],
            env=self.env,
            capture_output=True,
            timeout=600,
        )

    # ------------------------------------------------------------------ independent checks
    def answers(self, part: str) -> bool:
        """Whether ``part`` does its job, seen from outside (never the supervisor's word)."""
        try:
            return CHECKS[part](self)
        except Exception:
            return False

    def kill(self, part: str) -> int:
        state = self.supervisor.state(part)
        if state is None or state.pid is None:
            raise SystemExit(f"{part} is not running under the supervisor")
        os.kill(state.pid, signal.SIGKILL)
        return state.pid


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _airflow_component(platform: Platform, component: str) -> bool:
    """The API server's health document: each component's last heartbeat is recent."""
    with urllib.request.urlopen(f"{platform.airflow_url}/api/v2/monitor/health", timeout=3) as response:
        doc = json.loads(response.read())
    return doc.get(component, {}).get("status") == "healthy"


def _mariadb(platform: Platform) -> bool:
    from retail_platform.sandbox.mariadb import LocalMariaDB

    conn = LocalMariaDB(platform.state / "mariadb").root_connect(connect_timeout=2)
    conn.close()
    return True


def _postgres(platform: Platform) -> bool:
    from retail_platform.sandbox.postgres import LocalPostgres

    LocalPostgres(platform.state / "postgres").superuser_connect(connect_timeout=2).close()
    return True


def _consumer(platform: Platform) -> bool:
    """A fresh event's output reaches the lake (only the consumer puts it there)."""
    from retail_platform.sandbox.kinesis import _client

    session = f"probe-{uuid.uuid4().hex[:8]}"
    _client(platform.kinesis_endpoint()).put_record(
        StreamName="retail-shopper-events", PartitionKey=session, Data=json.dumps(_event(session, 0))
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if session in lake_sessions(platform.state, "probe-"):
            return True
        time.sleep(0.25)
    return False


CHECKS = {
    "airflow-api-server": lambda p: _http_ok(f"{p.airflow_url}/api/v2/monitor/health"),
    "airflow-scheduler": lambda p: _airflow_component(p, "scheduler"),
    "airflow-dag-processor": lambda p: _airflow_component(p, "dag_processor"),
    "airflow-triggerer": lambda p: _airflow_component(p, "triggerer"),
    "mariadb": _mariadb,
    "postgres": _postgres,
    "kinesis": lambda p: _http_ok(f"{p.kinesis_endpoint()}/moto-api/"),
    "consumer": _consumer,
    "api": lambda p: _http_ok(f"{p.api_url}/health"),
}


def lake_sessions(state: Path, prefix: str) -> list[str]:
    import duckdb

    pattern = state / "lake" / "recommendations" / "stream=*" / "**" / "*.parquet"
    if not list((state / "lake" / "recommendations").glob("stream=*/*/*.parquet")):
        return []
    rows = duckdb.sql(
        f"select session_id from read_parquet('{pattern}', union_by_name = true) "
        f"where session_id like '{prefix}%'"
    ).fetchall()
    return [r[0] for r in rows]


# ---------------------------------------------------------------------- Airflow's view, read apart
def scheduled_runs(platform: Platform) -> dict[str, int]:
    """Extraction runs by state, from the metadata database (what an operator's UI would show)."""
    import psycopg

    from retail_platform.sandbox.postgres import LocalPostgres

    url = LocalPostgres(platform.state / "postgres").database_url("airflow", driver="postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select state, count(*) from dag_run where dag_id like 'extract_%' and run_type = 'scheduled' "
            "group by state"
        ).fetchall()
    return dict(rows)


def data_age_minutes(platform: Platform) -> float | None:
    import duckdb

    link = platform.state / "warehouse" / "retail.duckdb"
    if not link.exists():
        return None
    with duckdb.connect(str(link.resolve()), read_only=True) as conn:
        schema = conn.execute(
            "select table_schema from information_schema.tables where table_name = 'fct_orders'"
        ).fetchone()
        if schema is None:
            return None
        newest = conn.execute(f'select max(ordered_at) from "{schema[0]}".fct_orders').fetchone()[0]
    return None if newest is None else (time.time() - newest.timestamp()) / 60


# ---------------------------------------------------------------------- the run
def kill_and_time(platform: Platform, part: str, traffic: Traffic, timeout: float) -> dict:
    """SIGKILL ``part``; seconds until it answers again, seen from outside."""
    if part == "kinesis":
        # moto holds its streams in memory: what it held unread is lost with it. Drain first, so the
        # exactly-once count is about the platform, and the loss is counted apart.
        traffic.paused.set()
        wait_until(lambda: set(traffic.accepted) <= set(lake_sessions(platform.state, "soak-")), 60)
        traffic.lost_with_kinesis |= set(traffic.accepted) - set(lake_sessions(platform.state, "soak-"))
    killed_at = time.monotonic()
    pid = platform.kill(part)
    traffic.paused.clear()
    time.sleep(0.5)
    back = wait_until(lambda: platform.answers(part), timeout)
    return {
        "part": part,
        "pid": pid,
        "back_s": round(time.monotonic() - killed_at, 1) if back else None,
    }


def wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def run(args) -> dict:
    state = Path(args.state_dir or ROOT / ".state" / "soak").resolve()
    shutil.rmtree(state, ignore_errors=True)
    platform = Platform(state, args.stack, args.live)
    os.environ.update({k: v for k, v in platform.env.items() if k.startswith("RETAIL_")})
    start_s = platform.start()
    traffic = Traffic()
    threads = [
        threading.Thread(
            target=produce,
            args=(traffic, platform.kinesis_endpoint, "retail-shopper-events", args.event_rate),
            daemon=True,
        ),
        threading.Thread(target=request_api, args=(traffic, platform.api_url, args.api_rate), daemon=True),
    ]
    for thread in threads:
        thread.start()
    parts = args.kill or (ALL_PARTS if args.stack == "up" else SERVE_PARTS)
    kills, ages = [], []
    ends = time.monotonic() + args.minutes * 60
    next_kill, next_sample, i = time.monotonic() + args.warm_up, time.monotonic(), 0
    try:
        while time.monotonic() < ends:
            if args.stack == "up" and time.monotonic() >= next_sample:
                ages.append(data_age_minutes(platform))
                next_sample += 60
            if time.monotonic() >= next_kill and (args.kill_every or i < len(parts)):
                kills.append(kill_and_time(platform, parts[i % len(parts)], traffic, args.back_timeout))
                print(json.dumps(kills[-1]), file=sys.stderr, flush=True)
                i += 1
                next_kill = time.monotonic() + (args.kill_every or 1)
            time.sleep(1)
    finally:
        traffic.stop.set()
        for thread in threads:
            thread.join(15)
    accepted = set(traffic.accepted) - traffic.lost_with_kinesis
    wait_until(lambda: accepted <= set(lake_sessions(state, "soak-")), 120)
    kept = lake_sessions(state, "soak-")
    report = {
        "stack": args.stack,
        "minutes": args.minutes,
        "start_s": round(start_s, 1),
        "kills": kills,
        "events_accepted": len(traffic.accepted),
        "events_put_errors": traffic.put_errors,
        "events_lost_with_kinesis": len(traffic.lost_with_kinesis),
        "events_in_lake_once": len(accepted & set(kept)),
        "events_missing": len(accepted - set(kept)),
        "events_duplicated": len(kept) - len(set(kept)),
        **api_summary(traffic.api),
    }
    if args.stack == "up":
        known = [a for a in ages if a is not None]
        report["data_age_max_min"] = round(max(known), 1) if known else None
        report["scheduled_extraction_runs"] = scheduled_runs(platform)
    if not args.keep:
        platform.stop()
    return report


def api_summary(api: list) -> dict:
    answered = [s for _, s, status in api if s is not None and status == 200]
    within = sum(1 for s in answered if s <= DEADLINE_S)
    return {
        "api_requests": len(api),
        "api_within_1s_share": round(within / len(api), 5) if api else None,
        "api_refused_503": sum(1 for _, _, status in api if status == 503),
        "api_errors": sum(1 for _, s, _ in api if s is None),
    }


def markdown(report: dict) -> str:
    rows = [f"| {k['part']} | {k['back_s']} s |" for k in report["kills"]]
    return "\n".join(["| part killed (SIGKILL) | back after |", "| --- | --- |", *rows])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", choices=["up", "serve"], default="up")
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--event-rate", type=float, default=20, help="shopper events a second")
    parser.add_argument("--api-rate", type=float, default=20, help="API requests a second")
    parser.add_argument("--live", type=float, default=2, help="up: live orders a second on the replica")
    parser.add_argument("--kill", action="append", choices=ALL_PARTS, help="these parts (default: all)")
    parser.add_argument("--kill-every", type=float, default=180, help="seconds between kills (0: each once)")
    parser.add_argument("--warm-up", type=float, default=60, help="seconds before the first kill")
    parser.add_argument("--back-timeout", type=float, default=300)
    parser.add_argument("--state-dir", help="default .state/soak (wiped first)")
    parser.add_argument("--keep", action="store_true", help="leave the platform running")
    parser.add_argument("--markdown", action="store_true", help="also print the README table's rows")
    args = parser.parse_args(argv)
    report = run(args)
    print(json.dumps(report, indent=2))
    if args.markdown:
        print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
