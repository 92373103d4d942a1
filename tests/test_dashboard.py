"""Marketing's side, against the real thing: the warehouse built from a generated source with a demand
spike happening now, the spike alerts pushed after the build (to a real HTTP server standing in for
Slack, or the alerts file), and Superset started on that warehouse, looked at in Debian's chromium
as the `marketing` user."""

from __future__ import annotations

import json
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest
import yaml
from browser_support import SCREENSHOTS, chromium, free_port, listening_addresses
from dashboard_support import (
    InjectedSpike,
    SlackReceiver,
    build_published_warehouse,
    inject_current_spike,
)

from retail_platform.dashboard.spike_alerts import announce_spikes
from retail_platform.settings import Settings
from retail_platform.warehouse.snapshots import build_path, publish_build, read_only

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "include" / "superset" / "bundle"
CHARTS = {yaml.safe_load(p.read_text())["slice_name"] for p in (BUNDLE / "charts").glob("*.yaml")}


@dataclass(frozen=True)
class DemandWarehouse:
    settings: Settings
    spike: InjectedSpike


@pytest.fixture(scope="module")
def demand_warehouse(mariadb, seed_scratch, reader, tmp_path_factory):
    """The classic preset (with the generator's injected spikes) plus a spike rising now, extracted
    and built into a published warehouse of the module's own."""
    source = seed_scratch("dashboard", fresh=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0, tzinfo=None)
    spike = inject_current_spike(source, end=end)
    tmp = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETAIL_LAKE_URI", str(tmp / "lake"))
        mp.setenv("RETAIL_DUCKDB_PATH", str(tmp / "warehouse" / "retail.duckdb"))
        mp.setenv("RETAIL_ALERTS_FILE", str(tmp / "alerts.jsonl"))
        settings = build_published_warehouse(
            reader.with_database(source.database), end=end.replace(tzinfo=UTC)
        )
        yield DemandWarehouse(settings, spike)


def marts(settings: Settings, sql: str) -> list[tuple]:
    with read_only(settings) as conn:
        return conn.execute(sql).fetchall()


# ---------------------------------------------------------------------- spike alerts
def test_a_spike_happening_now_goes_to_marketing_once_in_block_kit(demand_warehouse, monkeypatch):
    settings, spike = demand_warehouse.settings, demand_warehouse.spike
    marketing, platform = SlackReceiver(), SlackReceiver()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_MARKETING", marketing.connection())
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", platform.connection())
    monkeypatch.setenv("RETAIL_DASHBOARD_URL", "http://bi.example.invalid/superset/dashboard/demand-now/")
    try:
        first = announce_spikes(settings)
        again = announce_spikes(settings)  # a rerun of the same build
    finally:
        marketing.server.shutdown()
        platform.server.shutdown()

    assert len(first["announced"]) == 1 and first["delivered_to"] == "slack", first
    assert again["announced"] == [] and len(marketing.messages) == 1, "announced twice"
    assert platform.messages == [], "spike alerts belong in marketing's channel, not the platform's"
    (name,) = marts(
        settings,
        f"select product_name from analytics.dim_products where product_code = '{spike.product_code}'",
    )[0]
    message = marketing.messages[0]
    header, section, actions = message["blocks"][:3]
    assert name in header["text"]["text"] and spike.country in header["text"]["text"]
    fields = "\n".join(field["text"] for field in section["fields"])
    for expected in (
        spike.product_code,
        spike.country,
        f"{spike.first_hour:%Y-%m-%d %H:%M} UTC",  # when it started
        "× its usual hourly orders",  # how strong
        "*Still rising*\nyes",
    ):
        assert expected in fields, fields
    assert actions["elements"][0]["url"] == "http://bi.example.invalid/superset/dashboard/demand-now/"
    assert "http://bi.example.invalid/superset/dashboard/demand-now/" in message["text"]
    assert not settings.alerts_file.exists()


def test_a_spike_injected_by_the_generator_is_announced_once_without_slack(
    demand_warehouse, monkeypatch, tmp_path
):
    """The classic preset's injected spike, seen the hour after it peaked: without marketing's Slack it
    goes to the alerts file, once; spikes older than the lookback are never announced."""
    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.presets import get_preset

    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))  # a state of its own
    settings = Settings.from_env()
    truth = generate(get_preset("classic"), seed=42).truth["spikes"].to_pylist()
    detected = marts(
        settings, "select spike_id, product_code, country, spike_start from analytics.fct_demand_spikes"
    )

    def found(truth_spike: dict) -> str | None:
        """The mart's spike in the injected one's rising hours (its first hours may be below the rule)."""
        start, rise = truth_spike["start_hour"], timedelta(hours=truth_spike["rise_hours"])
        for spike_id, code, country, spike_start in detected:
            same = (code, country) == (truth_spike["productCode"], truth_spike["country"])
            if same and start <= spike_start < start + rise:
                return spike_id
        return None

    injected = [t for t in truth if found(t)]
    assert injected, f"the warehouse detects none of the generator's spikes {truth}"
    spike = injected[0]
    spike_id = found(spike)
    peaked = spike["start_hour"].replace(tzinfo=UTC) + timedelta(hours=spike["rise_hours"])

    before = announce_spikes(settings, now=peaked + timedelta(days=3))  # long after: not news
    during = announce_spikes(settings, now=peaked + timedelta(hours=1))
    rerun = announce_spikes(settings, now=peaked + timedelta(hours=1))

    assert spike_id not in before["announced"]
    assert spike_id in during["announced"] and during["delivered_to"] == str(settings.alerts_file)
    assert rerun["announced"] == []
    alerts = [json.loads(line) for line in settings.alerts_file.read_text().splitlines()]
    written = [a for a in alerts if a["kind"] == "demand_spike" and a["details"]["spike_id"] == spike_id]
    assert len(written) == 1 and written[0]["channel"] == "#marketing"
    assert written[0]["details"]["is_rising"] is False and "*Still rising*: no" in written[0]["text"]


def test_spikes_read_through_dbt_as_on_redshift_equal_the_published_ones(demand_warehouse):
    """Production reads the spikes through the dbt target's connection (`dbt show`, no second
    driver); here that path runs on DuckDB and must give what the published snapshot gives."""
    from retail_platform.dashboard.spike_alerts import (
        DemandSpike,
        _query_with_dbt,
        read_recent_spikes,
        spikes_query,
    )

    settings, since = demand_warehouse.settings, datetime(2000, 1, 1)
    through_dbt = [DemandSpike.from_row(row) for row in _query_with_dbt(spikes_query(since), settings)]
    published = read_recent_spikes(settings, since)
    assert len(published) >= 2 and through_dbt == published


def test_the_transform_dag_announces_spikes_after_publishing(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "transform_warehouse.py")).get_dag("transform_warehouse")
    task = dag.task_dict["announce_demand_spikes"]
    assert "publish_warehouse" in task.upstream_task_ids, "spikes are read from the published build"


# ---------------------------------------------------------------------- Superset in a browser
@pytest.fixture(scope="module")
def superset(demand_warehouse):
    """Superset (its own environment, created once per machine) on the module's warehouse."""
    from retail_platform.sandbox.superset import SupersetServer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETAIL_SUPERSET_PORT", str(free_port()))
        server = SupersetServer.from_env()
        started = time.monotonic()
        server.ensure_running()
        print(f"Superset set up, imported and started in {time.monotonic() - started:.0f} s")
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def browser():
    with chromium() as instance:
        yield instance


def login(browser, server, user: str):
    page = browser.new_page(viewport={"width": 1600, "height": 1200})
    page.goto(f"{server.settings.superset_url}/login/")
    page.fill("#username", user)
    page.fill("#password", server.credentials()[f"{user}_password"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/superset/welcome/**", timeout=60_000)
    return page


def open_dashboard(page, server) -> list:
    """Open "Demand now" and wait until every chart finished loading; returns the data responses."""
    responses = []
    page.on("response", lambda r: responses.append(r) if "/api/v1/chart/data" in r.url else None)
    page.goto(server.settings.dashboard_url)
    page.wait_for_function(
        """n => {
            const charts = document.querySelectorAll('[data-test="chart-grid-component"]');
            return charts.length >= n && [...charts].every(
                c => !c.querySelector('[data-test="loading-indicator"], .loading') && c.innerText.trim());
        }""",
        arg=len(CHARTS),
        timeout=120_000,
    )
    page.wait_for_load_state("networkidle")
    return responses


def chart(page, name: str):
    return page.locator(f'[data-test="chart-grid-component"][data-test-chart-name="{name}"]')


def big_number(page, name: str) -> str:
    """The figure of a Big Number chart (the line after its title)."""
    lines = [line.strip() for line in chart(page, name).inner_text().splitlines() if line.strip()]
    return lines[lines.index(name) + 1]


def api(page, server, method: str, path: str, data: dict | None = None):
    """Superset's API with the browser's session (and its CSRF token for writes)."""
    url = f"{server.settings.superset_url}{path}"
    if method == "GET":
        return page.request.get(url)
    token = page.request.get(f"{server.settings.superset_url}/api/v1/security/csrf_token/").json()["result"]
    headers = {"X-CSRFToken": token, "Referer": server.settings.superset_url}
    return page.request.fetch(url, method=method, headers=headers, data=data)


def test_marketing_sees_demand_now_as_the_marts_say(superset, browser, demand_warehouse):
    settings = demand_warehouse.settings
    page = login(browser, superset, "marketing")
    responses = open_dashboard(page, superset)

    names = set(page.eval_on_selector_all(
        '[data-test="chart-grid-component"]', "els => els.map(e => e.dataset.testChartName)"))  # fmt: skip
    assert names == CHARTS
    for response in responses:
        assert response.status == 200, f"{response.url}: {response.status} {response.text()[:300]}"
        for result in response.json()["result"]:
            assert result["status"] == "success" and not result["error"], result
    for name in CHARTS:
        body = chart(page, name)
        assert body.locator('[role="alert"], .ant-alert-error').count() == 0, f"{name}: {body.inner_text()}"
        assert "No results" not in body.inner_text(), f"{name} is empty"
    for name in ("Hourly demand (orders, units)", "Hourly revenue"):
        assert chart(page, name).locator("canvas, svg").count() > 0, f"{name} drew nothing"

    ((top_product,),) = marts(
        settings, "select product_name from analytics.fct_popular_products_7d where popularity_rank = 1"
    )
    first_row = chart(page, "Popular products this week").locator("tbody tr").first
    assert top_product in first_row.inner_text()
    ((rising,),) = marts(settings, "select count(*) from analytics.fct_demand_spikes where is_rising")
    assert rising >= 1 and big_number(page, "Spikes rising now") == str(rising)
    assert "▲ rising now" in chart(page, "Demand spikes").inner_text()
    ((newest,),) = marts(settings, "select max(last_ordered_at) from analytics.fct_hourly_demand")
    assert big_number(page, "Newest order (UTC)") == f"{newest:%Y-%m-%d %H:%M}"
    age = (datetime.now(UTC).replace(tzinfo=None) - newest).total_seconds() / 60
    assert abs(int(big_number(page, "Data age (minutes)").replace(",", "")) - age) <= 2

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "superset-demand-now.png"), full_page=True)


def test_marketing_is_refused_the_ml_schema_and_sql_lab(superset, browser, demand_warehouse):
    admin = login(browser, superset, "admin")
    (database,) = api(admin, superset, "GET", "/api/v1/database/").json()["result"]
    schemas = api(admin, superset, "GET", f"/api/v1/database/{database['id']}/schemas/").json()["result"]
    # duckdb-engine names schemas with their catalog (the snapshot file), e.g. "retail-<build>".ml
    assert {"analytics", "ml"} <= {s.rsplit(".", 1)[-1] for s in schemas}, "an ml schema to refuse"

    page = login(browser, superset, "marketing")
    datasets = api(page, superset, "GET", "/api/v1/dataset/?q=(page_size:100)").json()["result"]
    assert {(d["schema"], d["table_name"]) for d in datasets} == {
        ("analytics", "fct_hourly_demand"),
        ("analytics", "fct_demand_spikes"),
        ("analytics", "fct_popular_products_7d"),
    }
    visible = api(page, superset, "GET", f"/api/v1/database/{database['id']}/schemas/").json()["result"]
    assert not [s for s in visible if s.rsplit(".", 1)[-1] == "ml"]
    ml = next(s for s in schemas if s.rsplit(".", 1)[-1] == "ml")
    tables = api(page, superset, "GET", f"/api/v1/database/{database['id']}/tables/?q=(schema_name:'{ml}')")
    assert tables.status in (403, 404) or tables.json()["count"] == 0
    query = {"database_id": database["id"], "sql": "select * from ml.ratings_ml_training", "runAsync": False}
    assert api(page, superset, "POST", "/api/v1/sqllab/execute/", query).status == 403
    new_dataset = {"database": database["id"], "schema": "ml", "table_name": "ratings_ml_training"}
    assert api(page, superset, "POST", "/api/v1/dataset/", new_dataset).status == 403
    hourly = next(d for d in datasets if d["table_name"] == "fct_hourly_demand")
    sneaky = {
        "datasource": {"id": hourly["id"], "type": "table"},
        "queries": [{"metrics": [{"expressionType": "SQL", "label": "x",
                                  "sqlExpression": "(select count(*) from ml.ratings_ml_training)"}]}],
    }  # fmt: skip
    refused = api(page, superset, "POST", "/api/v1/chart/data", sneaky)
    assert refused.status in (400, 403), refused.text()
    response = page.goto(f"{superset.settings.superset_url}/sqllab/")
    assert response.status == 403, "no SQL Lab for marketing"


def test_superset_is_private_and_reads_the_warehouse_read_only(superset, browser):
    assert listening_addresses(superset.settings.superset_port) == {"127.0.0.1"}
    creds = superset.credentials_file
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    assert stat.S_IMODE(superset.home.stat().st_mode) == 0o700
    assert {"secret_key", "admin_password", "marketing_password"} <= set(json.loads(creds.read_text()))
    assert not str(creds).startswith(str(ROOT / "include")), "secrets live in the state folder"

    admin = login(browser, superset, "admin")
    (database,) = api(admin, superset, "GET", "/api/v1/database/").json()["result"]
    mode = api(admin, superset, "POST", "/api/v1/sqllab/execute/", {
        "database_id": database["id"], "sql": "select current_setting('access_mode') as mode", "runAsync": False,
    }).json()  # fmt: skip
    assert mode["data"] == [{"mode": "read_only"}]
    write = api(admin, superset, "POST", "/api/v1/sqllab/execute/", {
        "database_id": database["id"], "sql": "create table analytics.scratch (i integer)", "runAsync": False,
    })  # fmt: skip
    assert write.status != 200, "the warehouse connection must refuse writes"


def test_a_build_in_progress_never_locks_the_dashboard_and_a_new_one_shows(
    superset, browser, demand_warehouse
):
    settings = demand_warehouse.settings
    page = login(browser, superset, "marketing")
    ((rising,),) = marts(settings, "select count(*) from analytics.fct_demand_spikes where is_rising")
    build = duckdb.connect(str(build_path(settings)))  # dbt's write lock on the build file
    try:
        build.execute(
            "insert into analytics.fct_demand_spikes select md5('another'), product_code, product_name, "
            "product_line, 'Norway', region, spike_start, last_rising_hour, rising_hours, first_hour_orders, "
            "peak_orders, baseline_orders_per_hour, strength, true from analytics.fct_demand_spikes "
            "where is_rising limit 1"
        )
        open_dashboard(page, superset)
        assert big_number(page, "Spikes rising now") == str(rising), "a half-built state showed"
    finally:
        build.close()
    publish_build(settings)
    page.reload()
    open_dashboard(page, superset)
    assert big_number(page, "Spikes rising now") == str(rising + 1), "the new build did not show"


def test_a_restart_imports_the_bundle_again_without_duplicates(superset, browser):
    page = login(browser, superset, "admin")
    before = {
        kind: api(page, superset, "GET", f"/api/v1/{kind}/").json()["count"]
        for kind in ("chart", "dashboard")
    }
    superset.provision()
    after = {
        kind: api(page, superset, "GET", f"/api/v1/{kind}/").json()["count"]
        for kind in ("chart", "dashboard")
    }
    assert before == after == {"chart": len(CHARTS), "dashboard": 1}
