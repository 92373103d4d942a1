"""The long-running platform with real processes and real kills: `./platform serve` under
supervisord (each part comes back by itself, the others keep answering, every accepted event's output
is in the lake exactly once), a slow server that is left alone, and the sandbox in a private state
folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from serving_support import PRODUCTS, event, make_payload, publish, read_lake

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "service-test-" + "k" * 24
pytestmark = pytest.mark.slow


def free_port() -> int:
    from retail_platform.sandbox.processes import free_port

    return free_port()


def wait_for(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# ---------------------------------------------------------------------- `serve`, supervised
@pytest.fixture(scope="module")
def served(state_dir):
    """`retail serve` in a state folder of its own, with a model published before it starts (the
    PostgreSQL it started for that is handed over to the supervisor, on its data)."""
    from retail_platform.sandbox.postgres import LocalPostgres
    from retail_platform.sandbox.supervisor import Supervisor

    state = state_dir / "service"
    env = os.environ | {
        "RETAIL_STATE_DIR": str(state),
        "RETAIL_LAKE_URI": str(state / "lake"),
        "RETAIL_API_PORT": str(free_port()),
        # Two supervised API processes on one port: one killed, the other answers.
        "RETAIL_API_WORKERS": "2",
        "RETAIL_API_KEYS": f"test:{API_KEY}",
        "RETAIL_ALERTS_FILE": str(state / "alerts.jsonl"),
        "RETAIL_LAKE_FLUSH_RECORDS": "20",
        "RETAIL_LAKE_FLUSH_S": "0.5",
        "RETAIL_CONSUMER_POLL_MS": "50",
        # About what is answered and kept, not how fast: a loaded machine must not turn answers into
        # fallbacks.
        "RETAIL_SERVING_DEADLINE_MS": "5000",
    }
    for name in [n for n in env if n.startswith("AIRFLOW_CONN_") or n.startswith("AWS_")]:
        del env[name]
    shutil.rmtree(state / "lake", ignore_errors=True)
    (state / "alerts.jsonl").unlink(missing_ok=True)
    supervisor = Supervisor(state)
    postgres = LocalPostgres(state / "postgres").ensure_running()
    publish(postgres.url(), make_payload(f"svc_{uuid.uuid4().hex[:6]}", seed=5))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "retail_platform.cli", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        print(result.stdout)
        assert "done in" in result.stdout  # each step says when it finished
        yield Served(state, env, supervisor)
    finally:
        supervisor.shutdown()
        postgres.stop()


class Served:
    def __init__(self, state: Path, env: dict, supervisor):
        from retail_platform.sandbox.kinesis import LocalKinesis

        self.state, self.env, self.supervisor = state, env, supervisor
        self.api = f"http://127.0.0.1:{env['RETAIL_API_PORT']}"
        self.kinesis = LocalKinesis(state / "kinesis", ("retail-shopper-events", "retail-recommendations"))

    def pid(self, name: str) -> int:
        state = self.supervisor.state(name)
        assert state is not None and state.state == "RUNNING", state
        return state.pid

    def kill_and_wait_back(self, name: str, then=None) -> tuple[int, int]:
        before = self.pid(name)
        os.kill(before, signal.SIGKILL)
        if then is not None:
            then()

        def back():
            state = self.supervisor.state(name)
            return state.pid if state and state.state == "RUNNING" and state.pid != before else None

        return before, wait_for(back, what=f"{name} back")

    def alerts(self) -> list[dict]:
        path = self.state / "alerts.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


class Producer:
    """Shopper events on the stream at a steady rate; remembers which the stream accepted."""

    def __init__(self, kinesis, stream: str):
        self.kinesis, self.stream = kinesis, stream
        self.prefix = f"stream-{uuid.uuid4().hex[:6]}-"
        self.accepted: list[str] = []
        self.refused = 0
        self.running = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client, n = None, 0
        while not self.stopped.is_set():
            if not self.running.wait(0.2):
                continue
            session = f"{self.prefix}{n}"
            doc = event(100 + 3 * (n % 50), browse=[(PRODUCTS[n % 40], 1, True)], session_id=session)
            try:
                client = client or self.kinesis.client()
                response = client.put_records(
                    StreamName=self.stream, Records=[{"PartitionKey": session, "Data": json.dumps(doc)}]
                )
                if not response.get("FailedRecordCount"):
                    self.accepted.append(session)
                    n += 1
            except Exception:
                self.refused += 1  # the stream is down: the sales platform would retry, as we do
                client = None
            time.sleep(0.05)


class Prober:
    """One API request every 100 ms; keeps (time, status or error)."""

    def __init__(self, url: str):
        self.url, self.results = url, []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        with httpx.Client(timeout=10) as client:
            while not self.stopped.is_set():
                n += 1
                doc = event(100, browse=[(PRODUCTS[1], 1, True)], session_id=f"api-{n}")
                try:
                    status = client.post(
                        f"{self.url}/v1/recommendations", json=doc, headers={"X-API-Key": API_KEY}
                    ).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                self.results.append((time.monotonic(), status))
                time.sleep(0.1)

    def answered_between(self, start: float, end: float) -> list:
        return [status for at, status in self.results if start <= at <= end]


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stream_sessions(state: Path) -> list[str]:
    return [
        r["session_id"]
        for r in read_lake(state / "lake", "recommendations")
        if r["session_id"].startswith("stream-")
    ]


def test_killed_parts_come_back_by_themselves_and_every_accepted_event_is_kept_once(served):
    producer = Producer(served.kinesis, "retail-shopper-events")
    prober = Prober(served.api)
    producer.thread.start()
    prober.thread.start()
    producer.running.set()
    try:
        wait_for(lambda: len(producer.accepted) > 20, what="events accepted")

        # The consumer: the API keeps answering while it is away; it resumes from its checkpoints.
        started = time.monotonic()
        served.kill_and_wait_back("consumer")
        api_during = prober.answered_between(started, time.monotonic())
        assert api_during and set(api_during) == {200}, api_during

        # One API process: the other answers meanwhile (at most the request in flight on the killed
        # one fails); events keep being accepted and consumed.
        accepted_before = len(producer.accepted)
        consumer_pid, other_api_pid = served.pid("consumer"), served.pid("api-2")
        started = time.monotonic()
        served.kill_and_wait_back("api")
        during = prober.answered_between(started, time.monotonic())
        assert during.count(200) >= 3 and len(during) - during.count(200) <= 1, during
        wait_for(lambda: answers(f"{served.api}/ready"), what="API ready")
        assert len(producer.accepted) > accepted_before
        assert (served.pid("consumer"), served.pid("api-2")) == (consumer_pid, other_api_pid)

        # moto: it keeps its streams in memory, so what it held and nobody had read yet is lost with it
        # (the README says so). Everything accepted so far is consumed first; then it is killed, and
        # the producer keeps trying through its absence (refused connections, then a new stream).
        producer.running.clear()
        time.sleep(0.3)
        wait_for(lambda: set(stream_sessions(served.state)) >= set(producer.accepted), what="drained")
        api_pid, consumer_pid = served.pid("api"), served.pid("consumer")
        started = time.monotonic()
        served.kill_and_wait_back("kinesis", then=producer.running.set)
        assert set(prober.answered_between(started, time.monotonic())) == {200}
        accepted_at_return = len(producer.accepted)
        wait_for(lambda: len(producer.accepted) > accepted_at_return + 20, what="accepted again")
        # The consumer waited for the stream; it did not exit. Nor did the API.
        assert (served.pid("api"), served.pid("consumer")) == (api_pid, consumer_pid)
    finally:
        producer.running.clear()
        producer.stopped.set()
        prober.stopped.set()
        producer.thread.join()
        prober.thread.join()

    accepted = set(producer.accepted)
    wait_for(lambda: set(stream_sessions(served.state)) >= accepted, what="every accepted event in the lake")
    kept = stream_sessions(served.state)
    assert len(kept) == len(set(kept)), "an event's output is in the lake twice"
    assert set(kept) == accepted

    # Each death and each return announced once.
    announced = [(a["kind"], a["details"]["program"]) for a in served.alerts()]
    for name in ("consumer", "api", "kinesis"):
        assert announced.count(("service_down", name)) == 1, announced
        assert announced.count(("service_back", name)) == 1, announced

    # One command shows every part's state.
    status = subprocess.run(
        [sys.executable, "-m", "retail_platform.cli", "status"],
        env=served.env,
        capture_output=True,
        text=True,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("postgres", "kinesis", "consumer", "api", "api-2"):
        assert any(line.split()[:2] == [name, "RUNNING"] for line in status.stdout.splitlines()), (
            status.stdout
        )


def test_a_slow_server_is_waited_for_not_replaced(served):
    """moto stopped (SIGSTOP) for longer than any health check: neither the supervisor nor a start of
    the sandbox (what `./platform run` does) replaces it; after SIGCONT it is the same process on
    the same port."""
    from retail_platform.sandbox import launcher
    from retail_platform.sandbox.settings import SandboxSettings

    settings = SandboxSettings.from_env(served.env)
    pid, port = served.pid("kinesis"), served.kinesis.port
    os.kill(pid, signal.SIGSTOP)
    started = {}
    try:
        starter = threading.Thread(
            target=lambda: started.update(launcher.start(settings, only={"kinesis"})), daemon=True
        )
        starter.start()
        time.sleep(8)  # four times the 2 s a health check waits for an answer
        assert starter.is_alive(), "the start gave up on a live server"
    finally:
        os.kill(pid, signal.SIGCONT)
    starter.join(60)
    assert not starter.is_alive()
    assert started["AWS_ENDPOINT_URL_KINESIS"] == f"http://127.0.0.1:{port}"
    assert served.pid("kinesis") == pid
    assert served.kinesis.port == port


# ---------------------------------------------------------------------- a private state folder
@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs as a user of its own only under root")
def test_postgres_runs_when_the_state_folder_sits_in_a_private_folder():
    """As `mktemp -d` makes it (mode 700): the server's user cannot enter it, so its files are placed
    where it can; the private folder stays private, and a restart finds the data again."""
    import stat
    import tempfile

    import psycopg

    from retail_platform.sandbox.postgres import LocalPostgres

    private = Path(tempfile.mkdtemp(prefix="retail-private-"))
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    part = LocalPostgres(private / "state" / "postgres")
    try:
        part.ensure_running()
        with psycopg.connect(part.url(), autocommit=True) as conn:
            conn.execute("create table kept (n int)")
            conn.execute("insert into kept values (42)")
        part.stop()
        part.ensure_running()
        with psycopg.connect(part.url()) as conn:
            assert conn.execute("select n from kept").fetchall() == [(42,)]
        assert stat.S_IMODE(private.stat().st_mode) == 0o700
        assert not str(part.datadir).startswith(str(private))
    finally:
        part.stop()
        placed = part.server_dir
        shutil.rmtree(private, ignore_errors=True)
        if placed != part.base_dir:
            shutil.rmtree(placed, ignore_errors=True)


# ---------------------------------------------------------------------- `up`
def _head(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(16)


def _airflow_runs(metadata_url: str, dag_id: str) -> list[str]:
    import psycopg

    with psycopg.connect(metadata_url) as conn:
        return [r[0] for r in conn.execute("select state from dag_run where dag_id = %s", (dag_id,))]


def test_up_keeps_airflow_metadata_in_postgresql_and_runs_on_schedule(state_dir):
    """`up` (without Superset and serving): Airflow's metadata in a database of its own in the sandbox's
    PostgreSQL, no SQLite file anywhere; the API server answers before the scheduler starts; a
    scheduled run (the schema watch: the cheapest DAG) succeeds with no task retried. (A full
    extraction -> transform cycle takes ~8 minutes on a loaded two-core machine: benchmarks/soak.py.)"""
    from retail_platform.sandbox.postgres import LocalPostgres

    state = state_dir / "up"
    shutil.rmtree(state, ignore_errors=True)
    from conftest import up_env

    # Not the default schedule: a command run beside the stack must parse the DAGs as the stack does.
    env = up_env(state, RETAIL_EXTRACT_SCHEDULE="7 * * * *")
    retail = [sys.executable, "-m", "retail_platform.cli"]
    try:
        # A source seeded long ago (the classic preset's own dates, 2003-2005): `up` brings it to now.
        seeded = subprocess.run(
            [*retail, "generate", "--preset", "classic"], env=env, capture_output=True, text=True
        )
        assert seeded.returncode == 0, seeded.stdout[-2000:] + seeded.stderr[-2000:]
        up = subprocess.run(
            [*retail, "up", "--no-dashboard", "--no-serving"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        out = up.stdout
        assert "bringing the source to the present: done" in out, out[-3000:]
        assert "topped up to" in out and "a spike rising now" in out, out[-3000:]
        assert out.index("Airflow API server on") < out.index("done", out.index("Airflow API server on"))
        assert out.index("Airflow API server on") < out.index(
            "Airflow DAG processor, scheduler and triggerer"
        )

        metadata = LocalPostgres(state / "postgres").database_url("airflow", driver="postgresql")
        wait_for(lambda: "success" in _airflow_runs(metadata, "watch_classicmodels_schema"), 300, "a run")

        import psycopg

        with psycopg.connect(metadata) as conn:
            retried = conn.execute(
                "select dag_id, task_id, state, try_number from task_instance "
                "where try_number > 1 or state in ('failed', 'upstream_failed')"
            ).fetchall()
        assert retried == [], retried  # e.g. a task launched before the API server listened
        status = subprocess.run([*retail, "status"], env=env, capture_output=True, text=True)
        assert status.returncode == 0, status.stdout

        # `./platform airflow ...` from a shell that lacks the stack's settings acts on the stack's
        # database with the stack's DAGs; the tests (`--connections-only`) never touch it.
        shell = {k: v for k, v in env.items() if k != "RETAIL_EXTRACT_SCHEDULE"}
        for_tools = subprocess.run([*retail, "sandbox", "env"], env=shell, capture_output=True, text=True)
        assert "export RETAIL_EXTRACT_SCHEDULE='7 * * * *'" in for_tools.stdout.splitlines()
        assert "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN" in for_tools.stdout
        # a killed scheduler's orphaned tasks are retried within a minute, not five
        assert (
            "export AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL='60'" in for_tools.stdout.splitlines()
        )
        for_tests = subprocess.run(
            [*retail, "sandbox", "env", "--connections-only"], env=shell, capture_output=True, text=True
        )
        assert "AIRFLOW__" not in for_tests.stdout and "RETAIL_EXTRACT_SCHEDULE" not in for_tests.stdout
        assert "AIRFLOW_CONN_" in for_tests.stdout
    finally:
        subprocess.run([*retail, "down"], env=env, capture_output=True, text=True, timeout=300)
    sqlite = [p for p in state.rglob("*") if p.is_file() and _head(p) == b"SQLite format 3\x00"]
    assert sqlite == []


# ---------------------------------------------------------------------- the soak benchmark's smoke
def test_soak_benchmark_smoke(state_dir):
    """benchmarks/soak.py at tiny size: `serve`, one minute of traffic, the consumer killed once."""
    result = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--stack", "serve", "--minutes", "1",
            "--kill", "consumer", "--kill-every", "0", "--warm-up", "15", "--event-rate", "5",
            "--api-rate", "5", "--back-timeout", "120", "--state-dir", str(state_dir / "soak"), "--markdown",
        ],
        capture_output=True,
        text=True,
        timeout=400,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    (kill,) = report["kills"]
    assert kill["part"] == "consumer" and kill["back_s"] is not None, kill
    assert report["events_accepted"] > 0
    assert report["events_missing"] == report["events_duplicated"] == 0
    assert report["api_errors"] == 0
    assert "| consumer |" in result.stdout


# ---------------------------------------------------------------------- the announcer's rule
def test_a_death_and_a_return_are_announced_once_whatever_the_retries():
    """supervisord's events for a crash loop (exit, backoff, backoff, running), a stop on purpose
    and a give-up: one alert a death, one a return, none for a stop."""
    from retail_platform.sandbox.supervisor import Announcer

    sent = []
    announcer = Announcer(deliver=lambda kind, title, text, name: sent.append((kind, name)))
    for state, name, from_state in [
        ("EXITED", "consumer", "RUNNING"),
        ("STARTING", "consumer", "EXITED"),
        ("BACKOFF", "consumer", "STARTING"),
        ("STARTING", "consumer", "BACKOFF"),
        ("BACKOFF", "consumer", "STARTING"),
        ("RUNNING", "consumer", "STARTING"),
        ("RUNNING", "api", "STARTING"),  # a first start: nothing to announce
        ("STOPPING", "api", "RUNNING"),
        ("STOPPED", "api", "STOPPING"),
        ("BACKOFF", "kinesis", "STARTING"),
        ("FATAL", "kinesis", "BACKOFF"),
    ]:
        announcer.on_event(f"PROCESS_STATE_{state}", {"processname": name, "from_state": from_state})
    assert sent == [
        ("service_down", "consumer"),
        ("service_back", "consumer"),
        ("service_down", "kinesis"),
        ("service_failed", "kinesis"),
    ]


def test_a_program_killed_from_outside_leaves_no_orphans_after_its_restart(tmp_path):
    """SIGKILL of a program that has children (the scheduler and its LocalExecutor workers) orphans
    them; its restart under supervisord stops them, so kills do not pile up idle processes."""
    from retail_platform.sandbox.supervisor import Program, Supervisor

    supervisor = Supervisor(tmp_path / "state")
    parent = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); time.sleep(600)"
    supervisor.start()
    try:
        supervisor.add(Program("forker", [sys.executable, "-c", parent], dict(os.environ)))
        first = supervisor.wait_running("forker", timeout=60).pid
        child = wait_for(lambda: _children(first), timeout=30, what="the program's child")[0]
        os.kill(first, signal.SIGKILL)
        second = wait_for(
            lambda: (s := supervisor.state("forker")) and s.state == "RUNNING" and s.pid != first and s.pid,
            timeout=60,
            what="the restart",
        )
        wait_for(lambda: not Path(f"/proc/{child}").exists(), timeout=30, what="the orphan to be stopped")
        assert _children(second), "the new run's own child is left alone"
    finally:
        supervisor.shutdown(timeout=30)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
