"""The operators' Airflow UI as `./platform up` runs it (scheduler, DAG processor, triggerer and API
server with authentication on), looked at in Debian's chromium: log in, see every DAG with its
owner and tags, trigger one and see it succeed."""

from __future__ import annotations

import json
import re
import stat
import time
import urllib.error
import urllib.request
from datetime import datetime

import pytest
from browser_support import SCREENSHOTS, chromium, free_port, listening_addresses
from playwright.sync_api import expect

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def airflow_stack(mariadb, vector_db, tmp_path_factory, dbt_manifest, dagbag):
    """Airflow's four services from the stack's own code, under its supervisor, on the test's sandbox
    MariaDB, with a metadata database of their own in the sandbox's PostgreSQL (as `up` keeps it; the
    session's SQLite stays the in-process tests')."""
    from retail_platform.sandbox.seed import seed_source
    from retail_platform.sandbox.stack import Stack, start_airflow
    from retail_platform.sandbox.supervisor import Supervisor

    seed_source(preset="classic", replace=True)
    tmp = tmp_path_factory.mktemp("airflow-ui")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_HOME", str(tmp / "airflow"))
        mp.setenv("RETAIL_LAKE_URI", str(tmp / "lake"))
        mp.setenv("RETAIL_ALERTS_FILE", str(tmp / "alerts.jsonl"))
        mp.setenv("RETAIL_AIRFLOW_PORT", str(free_port()))
        # Only the run the test triggers: no scheduled extraction and build competing for two cores.
        mp.setenv("AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE", "False")
        stack = Stack.from_env()
        supervisor = Supervisor(tmp / "state")
        started = time.monotonic()
        try:
            supervisor.start()
            metadata = vector_db.database_url("airflow_ui")
            start_airflow(stack, supervisor, dict(mariadb.connection_env()), metadata)
            print(f"Airflow set up and started in {time.monotonic() - started:.0f} s")
            _wait_until_parsed(metadata, set(dagbag.dag_ids))
            yield stack
        finally:
            supervisor.shutdown()


def _wait_until_parsed(metadata_url: str, dag_ids: set[str], timeout: float = 300) -> None:
    """The DAG processor's first pass on a fresh metadata database can take minutes on a loaded
    machine: the UI is looked at once every DAG is in it."""
    import psycopg

    url = metadata_url.replace("postgresql+psycopg2://", "postgresql://")
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url) as conn:
            parsed = {r[0] for r in conn.execute("select dag_id from serialized_dag")}
        if dag_ids <= parsed or time.monotonic() > deadline:
            return
        time.sleep(2)


@pytest.fixture(scope="module")
def operator_page(airflow_stack):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        password = json.loads(airflow_stack.passwords_file.read_text())["operator"]
        page.goto(f"{airflow_stack.airflow_url}/")
        page.wait_for_url("**/auth/login**")
        page.fill("input[name=username]", "operator")
        page.fill("input[name=password]", password)
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"^(?!.*/auth/login).*$"), timeout=60_000)
        yield page


def test_operators_see_every_dag_with_owner_and_tags_unpaused(airflow_stack, operator_page, dagbag):
    page = operator_page
    page.goto(f"{airflow_stack.airflow_url}/dags")
    for dag_id in dagbag.dag_ids:
        page.get_by_text(dag_id, exact=True).first.wait_for(timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "airflow-dags.png"), full_page=True)
    for dag_id, dag in sorted(dagbag.dags.items()):
        page.goto(f"{airflow_stack.airflow_url}/dags/{dag_id}")
        header = page.locator('[data-testid="header-card"]').first
        assert dag.tags, f"{dag_id} has no tags"
        for value in (dag.owner, *dag.tags):  # the header fills in once the DAG's details arrive
            expect(header).to_contain_text(value, timeout=60_000)
        assert "Owner" in header.inner_text()
        expect(page.locator('[data-testid="toggle-pause"]').first).to_have_attribute("data-state", "checked")


def test_an_operator_triggers_a_dag_and_sees_it_succeed(airflow_stack, operator_page, dagbag):
    page = operator_page
    # The quickest DAG: a schema watch reads the replica's schema (one DAG per source contract).
    triggered = next(dag_id for dag_id in sorted(dagbag.dag_ids) if dag_id.startswith("watch_"))
    page.goto(f"{airflow_stack.airflow_url}/dags/{triggered}")
    page.get_by_role("button", name="Trigger").first.click()
    page.get_by_role("dialog").get_by_role("button", name="Trigger").click()
    page.wait_for_url(f"**/dags/{triggered}/runs/manual__*", timeout=60_000)
    # The run's page follows its state by itself, as an operator watching it would see.
    badge = page.locator('[data-testid="header-card"] [data-testid="state-badge"]').first
    expect(badge).to_have_text(re.compile(r"^\s*(Success|Failed)\s*$"), timeout=300_000)
    assert badge.inner_text().strip() == "Success", f"the triggered run failed ({page.url})"


def test_the_ui_needs_a_login_and_stays_on_loopback(airflow_stack):
    assert listening_addresses(airflow_stack.settings.airflow_port) == {"127.0.0.1"}
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{airflow_stack.airflow_url}/api/v2/dags", timeout=10)
    assert refused.value.code == 401
    for path in (airflow_stack.passwords_file, airflow_stack.credentials_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    secrets = json.loads(airflow_stack.credentials_file.read_text())
    assert len(secrets["jwt_secret"]) >= 64, "a JWT secret of full length (HS512: 64 bytes)"
    assert set(json.loads(airflow_stack.passwords_file.read_text())) == {"admin", "operator"}


def _api(stack, method: str, path: str, body: dict | None = None, token: str | None = None) -> dict:
    """The REST API the UI uses, as the operator."""
    if token is None:
        password = json.loads(stack.passwords_file.read_text())["operator"]
        token = _api(stack, "POST", "/auth/token", {"username": "operator", "password": password}, "")
        token = token["access_token"]
    request = urllib.request.Request(
        f"{stack.airflow_url}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _at(timestamp: str) -> datetime:
    return datetime.fromisoformat(timestamp)


def test_runs_made_by_platform_run_show_their_task_logs_in_the_ui(airflow_stack, mariadb, vector_db, dagbag):
    """`./platform run`'s way of running DAGs (`airflow dags test` through the executor, on `up`'s
    metadata database and log folder): each task's log is read through the API the UI uses; each run
    starts when it starts (a shared logical date made each later run look longer)."""
    from retail_platform.sandbox.pipeline import run_dags

    dag_ids = [
        next(d for d in sorted(dagbag.dag_ids) if d.startswith(kind)) for kind in ("watch_", "extract_")
    ]
    metadata = vector_db.database_url("airflow_ui")
    env = airflow_stack.airflow_env(dict(mariadb.connection_env()))
    env |= {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata}

    def test_runs(dag_id: str) -> list[dict]:
        runs = _api(airflow_stack, "GET", f"/api/v2/dags/{dag_id}/dagRuns?order_by=start_date&limit=100")
        return [run for run in runs["dag_runs"] if run["triggered_by"] == "test"]

    before = {run["dag_run_id"] for dag_id in dag_ids for run in test_runs(dag_id)}
    # Paused, the scheduler leaves the runs to `dags test` alone (`run` refuses while `up` runs).
    for dag_id in dag_ids:
        _api(airflow_stack, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": True})
    try:
        run_dags(
            airflow_stack.settings.platform, env, [(dag_id, "as `./platform run` does") for dag_id in dag_ids]
        )
    finally:
        for dag_id in dag_ids:
            _api(airflow_stack, "PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    (watch_run,) = [run for run in test_runs(dag_ids[0]) if run["dag_run_id"] not in before]
    (extract_run,) = [run for run in test_runs(dag_ids[1]) if run["dag_run_id"] not in before]
    assert watch_run["state"] == extract_run["state"] == "success", (watch_run, extract_run)
    assert _at(extract_run["start_date"]) >= _at(watch_run["end_date"]), (watch_run, extract_run)
    for run in (watch_run, extract_run):
        dag_run = f"/api/v2/dags/{run['dag_id']}/dagRuns/{run['dag_run_id']}"
        tasks = _api(airflow_stack, "GET", f"{dag_run}/taskInstances?limit=100")["task_instances"]
        assert tasks
        assert _at(run["start_date"]) <= min(_at(t["start_date"]) for t in tasks), (run, tasks)
        assert _at(run["end_date"]) >= max(_at(t["end_date"]) for t in tasks), (run, tasks)
        for task in tasks:
            path = f"{dag_run}/taskInstances/{task['task_id']}/logs/{task['try_number']}"
            lines = _api(airflow_stack, "GET", f"{path}?map_index={task['map_index']}")["content"]
            # The file the UI read (named in its first lines), then the task's own lines, from that run.
            sources = [line["event"] for line in lines if "timestamp" not in line]
            assert any(f"/run_id={run['dag_run_id']}/task_id={task['task_id']}/" in s for s in sources), lines
            own = [line for line in lines if line.get("run_id") == run["dag_run_id"]]
            assert own and all(line["task_id"] == task["task_id"] for line in own), lines
