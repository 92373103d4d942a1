"""Soak test with faults: the platform running as a service, steady traffic, every part killed in turn.

    RETAIL_EXTRACT_SCHEDULE='*/5 * * * *' python benchmarks/soak.py --stack up --preset prod --minutes 30 \
        --warm-up 120 --kill-every 180 --event-rate 20 --api-rate 20 --live 2
    python benchmarks/soak.py --stack serve --minutes 1 --kill consumer --smoke      (the suite's smoke)

It starts the platform (`retail up --live RATE --no-dashboard`, or `retail serve`) in a state folder
of its own (``--preset prod``: the source seeded with the prod preset first, calendar ending now),
puts shopper events on the stream and sends API requests at steady rates, and every
``--kill-every`` seconds sends SIGKILL to the next part (scheduler, API server, DAG processor,
triggerer, MariaDB, PostgreSQL, moto, consumer, API). Measured independently of the platform (its
own clients, not the supervisor's view):

* the time each part took to answer again (its port, health endpoint or a query; an Airflow
  component: a heartbeat newer than the kill; never while a child of the killed process lives on);
* events accepted by the stream and answered exactly once in the lake (moto loses what it held
  and nobody had read when it is killed: counted apart, see docs/parts/serving.md);
* API answers within 1 s (goal ≥ 99.9%), and none timed out;
* with `up`: scheduled extraction runs lost (failed, or an interval no run was created for; goal
  0) and the data age of the marts
  (now − newest order in the published warehouse, sampled each minute; goal ≤ 15 minutes outside a
  killed source's window).

The report is JSON on stdout (and ``--markdown`` rows for the table in docs/parts/performance.md).
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
    def __init__(self, state: Path, stack: str, live: float, preset: str = "classic"):
        self.state, self.stack, self.live, self.preset = state, stack, live, preset
        self.seed_s = 0.0
        self.killed_at = 0.0  # epoch seconds of the last kill
        self.killed_children: list[int] = []  # its children then (the API's workers, the executor's)
        self.probe: str | None = None  # the consumer's probe event since the last kill
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
            "RETAIL_AIRFLOW_PORT": os.environ.get("RETAIL_AIRFLOW_PORT") or str(free_port()),
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

    def seed(self) -> None:
        """A larger source than `up`'s classic one: seeded before `up`, which keeps a seeded source."""
        code = (
            "from retail_platform.sandbox import launcher\n"
            "from retail_platform.sandbox.seed import seed_source\n"
            f"print(seed_source(preset={self.preset!r}, replace=True, ends_now=True)['row_counts'])\n"
            "launcher.stop()\n"
        )
        result = subprocess.run([sys.executable, "-c", code], env=self.env, text=True, capture_output=True)
        if result.returncode != 0:
            raise SystemExit(f"seeding {self.preset} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}")
        print(f"seeded {self.preset}: {result.stdout.strip()}", file=sys.stderr, flush=True)

    def start(self) -> float:
        if self.stack == "up" and self.preset != "classic":
            seeding = time.monotonic()
            self.seed()
            self.seed_s = time.monotonic() - seeding
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
        """Whether ``part`` does its job, seen from outside (never the supervisor's word). Not while a
        child of the killed process lives on: the API's orphaned workers answer until they are reaped."""
        if any(Path(f"/proc/{pid}").exists() for pid in self.killed_children):
            return False
        try:
            return CHECKS[part](self)
        except Exception:
            return False

    def kill(self, part: str) -> int:
        state = self.supervisor.state(part)
        if state is None or state.pid is None:
            raise SystemExit(f"{part} is not running under the supervisor")
        self.killed_at = time.time()
        self.killed_children = _children(state.pid)
        self.probe = None
        os.kill(state.pid, signal.SIGKILL)
        return state.pid


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _airflow_component(platform: Platform, component: str) -> bool:
    """The API server's health document: the component heartbeats again since it was killed. ("healthy"
    alone would not do: a killed component stays healthy until its last heartbeat is 30 s old.)"""
    from datetime import datetime

    with urllib.request.urlopen(f"{platform.airflow_url}/api/v2/monitor/health", timeout=3) as response:
        doc = json.loads(response.read()).get(component, {})
    beat = doc.get(f"latest_{component}_heartbeat")
    return (
        doc.get("status") == "healthy"
        and beat is not None
        and datetime.fromisoformat(beat).timestamp() > platform.killed_at
    )


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
    """A probe event put on the stream after the kill reaches the lake (only the consumer puts it
    there): one probe per kill, waited for, since the consumer writes the lake every
    RETAIL_LAKE_FLUSH_S (5 s), so a fresh probe each poll with a short wait can miss every flush."""
    from retail_platform.sandbox.kinesis import _client

    if platform.probe is None:
        session = f"probe-{uuid.uuid4().hex[:8]}"
        _client(platform.kinesis_endpoint()).put_record(
            StreamName="retail-shopper-events", PartitionKey=session, Data=json.dumps(_event(session, 0))
        )
        platform.probe = session
    return platform.probe in lake_sessions(platform.state, "probe-")


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
def scheduled_runs(platform: Platform) -> dict:
    """Extraction runs by state, from the metadata database (what an operator's UI would show), and
    the intervals no run was created for: gaps between consecutive runs' interval ends, and intervals
    past the last one that are more than one interval overdue."""
    import psycopg

    from retail_platform.sandbox.postgres import LocalPostgres

    url = LocalPostgres(platform.state / "postgres").database_url("airflow", driver="postgresql")
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "select state, data_interval_end from dag_run where dag_id like 'extract_%' "
            "and run_type = 'scheduled' order by data_interval_end"
        ).fetchall()
    by_state: dict[str, int] = {}
    for state, _ in rows:
        by_state[state] = by_state.get(state, 0) + 1
    ends = [end.timestamp() for _, end in rows if end is not None]
    gaps = [b - a for a, b in zip(ends, ends[1:], strict=False)]
    step = min(gaps) if gaps else None
    missing = None
    if step:
        overdue = max(0, int((time.time() - ends[-1]) / step) - 1)
        missing = sum(round(g / step) - 1 for g in gaps) + overdue
    return {
        "by_state": by_state,
        "interval_ends": [time.strftime("%H:%M", time.gmtime(e)) for e in ends],
        "intervals_without_a_run": missing,
    }


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
    report = {"part": part, "pid": pid, "back_s": round(time.monotonic() - killed_at, 1) if back else None}
    if not back:  # what the supervisor saw, and the part's last words: for the one reading the report
        state = platform.supervisor.state(part)
        log = platform.supervisor.log_file(part)
        report["supervisor_state"] = None if state is None else f"{state.state} pid {state.pid}"
        report["log_tail"] = log.read_text(errors="replace")[-2000:] if log.exists() else None
    return report


def _safely(measure, platform: Platform):
    """A sample that fails (the warehouse being swapped, PostgreSQL killed) is a gap, not the end."""
    try:
        return measure(platform)
    except Exception as exc:
        print(f"sample failed: {exc!r}", file=sys.stderr, flush=True)
        return None


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
    platform = Platform(state, args.stack, args.live, args.preset)
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
    kills, ages, sampled_at = [], [], []
    began = time.monotonic()
    ends = began + args.minutes * 60
    next_kill, next_sample, i = time.monotonic() + args.warm_up, time.monotonic(), 0
    try:
        while time.monotonic() < ends:
            if args.stack == "up" and time.monotonic() >= next_sample:
                ages.append(_safely(data_age_minutes, platform))
                sampled_at.append(round(time.monotonic() - began))
                print(
                    json.dumps({"data_age_min": ages[-1], "t_s": round(time.monotonic() - began)}),
                    file=sys.stderr,
                    flush=True,
                )
                next_sample += 60
            if time.monotonic() >= next_kill and (args.kill_every or i < len(parts)):
                at_s = round(time.monotonic() - began)
                kills.append(
                    {
                        "at_s": at_s,
                        **kill_and_time(platform, parts[i % len(parts)], traffic, args.back_timeout),
                    }
                )
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
        "preset": args.preset,
        "seed_s": round(platform.seed_s, 1),
        "start_s": round(start_s, 1),
        "kills": kills,
        "events_accepted": len(traffic.accepted),
        "events_put_errors": traffic.put_errors,
        "events_lost_with_kinesis": len(traffic.lost_with_kinesis),
        "events_in_lake_once": len(accepted & set(kept)),
        "events_missing": len(accepted - set(kept)),
        "events_duplicated": len(kept) - len(set(kept)),
        **api_summary(traffic.api, began),
    }
    if args.stack == "up":
        known = [a for a in ages if a is not None]
        report["data_age_max_min"] = round(max(known), 1) if known else None
        report["data_ages"] = [
            (t, None if a is None else round(a, 1)) for t, a in zip(sampled_at, ages, strict=True)
        ]
        report["scheduled_extraction_runs"] = _safely(scheduled_runs, platform)
    if not args.keep:
        platform.stop()
    return report


def api_summary(api: list, began: float) -> dict:
    answered = [s for _, s, status in api if s is not None and status == 200]
    within = sum(1 for s in answered if s <= DEADLINE_S)
    failed_by_minute: dict[int, int] = {}  # minute of the run: requests not answered (200) within 1 s
    for at, seconds, status in api:
        if seconds is None or status != 200 or seconds > DEADLINE_S:
            minute = int((at - began) // 60)
            failed_by_minute[minute] = failed_by_minute.get(minute, 0) + 1
    return {
        "api_requests": len(api),
        "api_within_1s_share": round(within / len(api), 5) if api else None,
        "api_refused_503": sum(1 for _, _, status in api if status == 503),
        "api_errors": sum(1 for _, s, _ in api if s is None),
        "api_failed_by_minute": failed_by_minute,
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
    parser.add_argument("--preset", default="classic", help="up: the source's preset (prod: ~100k customers)")
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
