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
