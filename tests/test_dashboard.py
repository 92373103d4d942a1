"""Marketing's side, against the real thing: the default sandbox source (the classic preset, its
calendar ending now, a spike rising) extracted, built and published as `./platform run` does, the
spike alerts pushed after the build (to a real HTTP server standing in for Slack, or the alerts
file), and Superset started on that warehouse, looked at in Debian's chromium as `marketing`."""

from __future__ import annotations

import inspect
import json
import re
import stat
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import pytest
import yaml
from browser_support import SCREENSHOTS, chromium, free_port, listening_addresses
from dashboard_support import (
    DEFAULT_GENERATION,
    SlackReceiver,
    build_published_warehouse,
    seed_default_source,
)

from retail_platform.dashboard.links import product_label
from retail_platform.dashboard.spike_alerts import announce_spikes
from retail_platform.settings import Settings
from retail_platform.warehouse.snapshots import build_path, publish_build, read_only

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "include" / "superset" / "bundle"
CHARTS = {yaml.safe_load(p.read_text())["slice_name"] for p in (BUNDLE / "charts").glob("*.yaml")}
GREEN, RED = "rgb(46, 125, 50)", "rgb(198, 40, 40)"


@dataclass(frozen=True)
class DemandWarehouse:
    settings: Settings
    truth: dict  # the generator's ground truth (spikes, spike_hours, ...)
    built_at: datetime  # naive UTC

    def spike(self, *, rising: bool) -> dict:
        """The generator's spike rising through the last hour (or one long over)."""
        last = max(t["start_hour"] for t in self.truth["spikes"])
        return next(t for t in self.truth["spikes"] if (t["start_hour"] == last) == rising)


@pytest.fixture(scope="module")
def demand_warehouse(mariadb, admin, reader, tmp_path_factory):
    """What `./platform run` builds: the default source, its calendar ending now, extracted up to
    now and built into a published warehouse of the module's own."""
    now = datetime.now(UTC).replace(microsecond=0)
    source_db, source = seed_default_source(admin, mariadb, "dashboard", ends_at=now)
    tmp = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETAIL_LAKE_URI", str(tmp / "lake"))
        mp.setenv("RETAIL_DUCKDB_PATH", str(tmp / "warehouse" / "retail.duckdb"))
        mp.setenv("RETAIL_ALERTS_FILE", str(tmp / "alerts.jsonl"))
        settings = build_published_warehouse(reader.with_database(source_db.database), end=now)
        truth = {name: table.to_pylist() for name, table in source.truth.items()}
        yield DemandWarehouse(settings, truth, now.replace(tzinfo=None))


def marts(settings: Settings, sql: str) -> list[tuple]:
    with read_only(settings) as conn:
        return conn.execute(sql).fetchall()


def last_7_days(warehouse: DemandWarehouse) -> str:
    return f"timestamp '{warehouse.built_at - timedelta(days=7):%Y-%m-%d %H:%M:%S}'"


# ---------------------------------------------------------------------- the default build
def test_the_default_build_ends_now_with_a_spike_rising(demand_warehouse):
    """`./platform run`'s data ends now: the newest order is minutes old, the last 7 days have
    demand, and the generator's spike that rises through the last hour is rising in the marts."""
    from retail_platform.sandbox.pipeline import run_pipeline

    defaults = inspect.signature(run_pipeline).parameters
    assert {name: defaults[name].default for name in DEFAULT_GENERATION} == DEFAULT_GENERATION
    warehouse = demand_warehouse
    ((newest, rows_7d),) = marts(
        warehouse.settings,
        f"select max(last_ordered_at), count(*) filter (where order_hour >= {last_7_days(warehouse)}) "
        "from analytics.fct_hourly_demand",
    )
    assert timedelta(0) <= warehouse.built_at - newest < timedelta(hours=1), newest
    assert rows_7d > 0
    spike = warehouse.spike(rising=True)
    rising = marts(
        warehouse.settings, "select product_code, country from analytics.fct_demand_spikes where is_rising"
    )
    assert (spike["productCode"], spike["country"]) in rising, (spike, rising)


@pytest.mark.parametrize(
    ("age_seconds", "minutes", "colour"),
    [(0, 1, GREEN), (20, 1, GREEN), (60, 1, GREEN), (61, 2, GREEN), (3600, 60, GREEN), (3601, 61, RED)],
)
def test_the_data_age_reads_whole_minutes_never_fresher_than_it_is(age_seconds, minutes, colour):
    """The "Data age" chart's own metric and colours from the bundle, run in DuckDB: an order
    seconds old reads one minute (Superset writes a zero duration "0ms"), and green means at
    most an hour."""
    import jinja2

    dataset = yaml.safe_load((BUNDLE / "datasets/retail_warehouse/fct_hourly_demand.yaml").read_text())
    params = yaml.safe_load((BUNDLE / "charts/data_age.yaml").read_text())["params"]
    (expression,) = [m["expression"] for m in dataset["metrics"] if m["metric_name"] == params["metric"]]
    now = datetime(2026, 12, 7, 19, 30)
    metric = jinja2.Template(expression).render(utc_now_sql=lambda: f"timestamp '{now:%Y-%m-%d %H:%M:%S}'")
    conn = duckdb.connect()
    conn.execute("create table fct_hourly_demand (last_ordered_at timestamp)")
    conn.execute("insert into fct_hourly_demand values (?)", [now - timedelta(seconds=age_seconds)])
    ((shown,),) = conn.execute(f"select {metric} from fct_hourly_demand").fetchall()
    assert shown == minutes * 60_000
    red, green = params["conditional_formatting"]
    assert (red["colorScheme"], green["colorScheme"]) == ("#c62828", "#2e7d32")
    assert (RED if shown > red["targetValue"] else GREEN) == colour


# ---------------------------------------------------------------------- spike alerts
def test_a_spike_happening_now_goes_to_marketing_once_in_block_kit(demand_warehouse, monkeypatch):
    settings, spike = demand_warehouse.settings, demand_warehouse.spike(rising=True)
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
        f"select product_name from analytics.dim_products where product_code = '{spike['productCode']}'",
    )[0]
    message = marketing.messages[0]
    header, section, actions = message["blocks"][:3]
    assert name in header["text"]["text"] and spike["country"] in header["text"]["text"]
    fields = "\n".join(field["text"] for field in section["fields"])
    for expected in (
        spike["productCode"],
        spike["country"],
        "× its usual hourly orders",  # how strong
        "*Still rising*\nyes",
    ):
        assert expected in fields, fields
    # The button opens the dashboard filtered to the spike's product and country.
    link = actions["elements"][0]["url"]
    assert link.startswith("http://bi.example.invalid/superset/dashboard/demand-now/?native_filters=")
    state = unquote(urlsplit(link).query)
    assert f"'{product_label(name, spike['productCode'])}'" in state and f"val:!({spike['country']})" in state
    assert link in message["text"]
    assert not settings.alerts_file.exists()


def test_a_spike_injected_by_the_generator_is_announced_once_without_slack(
    demand_warehouse, monkeypatch, tmp_path
):
    """The generator's spike long over, seen the hour after it peaked: without marketing's Slack it
    goes to the alerts file, once; spikes older than the lookback are never announced."""
    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))  # a state of its own
    settings = Settings.from_env()
    spike = demand_warehouse.spike(rising=False)
    start, rise = spike["start_hour"], timedelta(hours=spike["rise_hours"])
    found = [
        spike_id
        for spike_id, code, country, spike_start in marts(
            settings, "select spike_id, product_code, country, spike_start from analytics.fct_demand_spikes"
        )
        # the mart's spike in the injected one's rising hours (its first hours may be below the rule)
        if (code, country) == (spike["productCode"], spike["country"]) and start <= spike_start < start + rise
    ]
    assert len(found) == 1, f"the warehouse does not detect the generator's spike {spike}"
    spike_id = found[0]
    peaked = start.replace(tzinfo=UTC) + rise

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
    page.wait_for_url("**/superset/welcome/**", timeout=180_000)  # slow on a loaded machine
    return page


def open_dashboard(page, server, url: str | None = None) -> list:
    """Open "Demand now" (or ``url``) and wait until every chart finished loading; returns the data
    responses."""
    responses = []
    page.on("response", lambda r: responses.append(r) if "/api/v1/chart/data" in r.url else None)
    page.goto(url or server.settings.dashboard_url)
    wait_for_charts(page)
    return responses


def wait_for_charts(page) -> None:
    page.wait_for_function(
        """n => {
            const charts = document.querySelectorAll('[data-test="chart-grid-component"]');
            return charts.length >= n && [...charts].every(
                c => !c.querySelector('[data-test="loading-indicator"], .loading') && c.innerText.trim());
        }""",
        arg=len(CHARTS),
        timeout=300_000,  # the first page after a start, on a loaded machine
    )
    page.wait_for_load_state("networkidle")


def chart(page, name: str):
    return page.locator(f'[data-test="chart-grid-component"][data-test-chart-name="{name}"]')


def big_number(page, name: str) -> str:
    """The figure of a Big Number chart."""
    return chart(page, name).locator(".header-line").inner_text().strip()


def table_rows(page, name: str) -> list[str]:
    return [row.inner_text() for row in chart(page, name).locator("tbody tr").all()]


def api(page, server, method: str, path: str, data: dict | None = None):
    """Superset's API with the browser's session (and its CSRF token for writes)."""
    url = f"{server.settings.superset_url}{path}"
    if method == "GET":
        return page.request.get(url)
    token = page.request.get(f"{server.settings.superset_url}/api/v1/security/csrf_token/").json()["result"]
    headers = {"X-CSRFToken": token, "Referer": server.settings.superset_url}
    return page.request.fetch(url, method=method, headers=headers, data=data)


def top_in_last_7_days(warehouse: DemandWarehouse, column: str, metric: str) -> str:
    ((top,),) = marts(
        warehouse.settings,
        f"select {column} from analytics.fct_hourly_demand where order_hour >= {last_7_days(warehouse)} "
        f"group by {column} order by sum({metric}) desc, {column} limit 1",
    )
    return top


def test_marketing_sees_demand_now_for_the_last_7_days(superset, browser, demand_warehouse):
    """The default build on the page: every chart has data of the last 7 days up to now, the data
    age is minutes and green, a spike rises; the committed screenshot is this page."""
    warehouse = demand_warehouse
    page = login(browser, superset, "marketing")
    responses = open_dashboard(page, superset)

    names = set(page.eval_on_selector_all(
        '[data-test="chart-grid-component"]', "els => els.map(e => e.dataset.testChartName)"))  # fmt: skip
    assert names == CHARTS
    for response in responses:
        assert response.status == 200, f"{response.url}: {response.status} {response.text()[:300]}"
        queries = response.request.post_data_json["queries"]
        for query, result in zip(queries, response.json()["result"], strict=True):
            assert result["status"] == "success" and not result["error"], result
            assert result["rowcount"] > 0, f"{response.url}: no rows in the last 7 days"
            # At the limit, Superset marks the chart "may show partial data".
            assert not query.get("row_limit") or result["rowcount"] < query["row_limit"], (
                f"{response.url}: {result['rowcount']} rows reach the row limit"
            )
    for name in CHARTS:
        body = chart(page, name)
        assert body.locator('[role="alert"], .ant-alert-error').count() == 0, f"{name}: {body.inner_text()}"
        assert "No results" not in body.inner_text() and "No data" not in body.inner_text(), (
            f"{name} is empty"
        )
    for name in ("Hourly demand (orders, units)", "Hourly revenue"):
        assert chart(page, name).locator("canvas, svg").count() > 0, f"{name} drew nothing"
    assert "Last week" in page.locator('[data-test="filter-bar"], .filter-bar, body').first.inner_text()
    assert "last 7 days up to now" in page.inner_text("body"), "the page says what its week is"

    age = chart(page, "Data age").locator(".header-line")
    assert re.fullmatch(r"\d{1,2}m", age.inner_text().strip()), age.inner_text()  # readable, under 1 h
    assert age.evaluate("e => getComputedStyle(e).color") == GREEN
    ((rising,),) = marts(
        warehouse.settings, "select count(*) from analytics.fct_demand_spikes where is_rising"
    )
    assert rising >= 1 and big_number(page, "Spikes rising now") == str(rising)
    spikes = table_rows(page, "Demand spikes")
    spike = warehouse.spike(rising=True)
    assert any("▲ rising now" in row and spike["productCode"] in row for row in spikes), spikes
    top_product = top_in_last_7_days(warehouse, "product_name || ' (' || product_code || ')'", "units")
    assert top_product in table_rows(page, "Popular products")[0]
    assert table_rows(page, "Demand by country")[0].startswith(
        top_in_last_7_days(warehouse, "country", "orders")
    )
    ((newest,),) = marts(warehouse.settings, "select max(last_ordered_at) from analytics.fct_hourly_demand")
    assert big_number(page, "Newest order (UTC)") == f"{newest:%Y-%m-%d %H:%M}"

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "superset-demand-now.png"), full_page=True)


def test_no_request_from_the_page_leaves_127_0_0_1(superset, browser):
    """No usage tracking, no beacon, font or tile from elsewhere: every request the browser makes
    while marketing logs in and looks at the dashboard goes to Superset on 127.0.0.1."""
    requests: list[str] = []
    context = browser.new_context()
    context.on("request", lambda r: requests.append(r.url))
    page = context.new_page()
    page.goto(f"{superset.settings.superset_url}/login/")
    page.fill("#username", "marketing")
    page.fill("#password", superset.credentials()["marketing_password"])
    page.keyboard.press("Enter")
    page.wait_for_url("**/superset/welcome/**", timeout=180_000)
    page.wait_for_load_state("networkidle")
    open_dashboard(page, superset)
    context.close()
    assert requests, "the browser made no request at all"
    elsewhere = sorted({u for u in requests if urlsplit(u).scheme in ("http", "https", "ws", "wss")
                        and urlsplit(u).hostname != "127.0.0.1"})  # fmt: skip
    assert elsewhere == [], f"requests left 127.0.0.1: {elsewhere}"


def test_a_click_on_a_spike_filters_the_other_charts(superset, browser, demand_warehouse):
    spike = demand_warehouse.spike(rising=True)
    ((name,),) = marts(
        demand_warehouse.settings,
        f"select product_name from analytics.dim_products where product_code = '{spike['productCode']}'",
    )
    label = product_label(name, spike["productCode"])
    page = login(browser, superset, "marketing")
    open_dashboard(page, superset)
    assert len(table_rows(page, "Popular products")) > 1
    chart(page, "Demand spikes").locator("tbody td", has_text=label).first.click()
    page.wait_for_function(
        "() => document.querySelectorAll('[data-test-chart-name=\"Popular products\"] tbody tr').length === 1",
        timeout=180_000,
    )
    wait_for_charts(page)
    (only,) = table_rows(page, "Popular products")
    assert label in only
    countries = {row.split("\t")[0] for row in table_rows(page, "Demand by country")}
    sold_in = {
        c
        for (c,) in marts(
            demand_warehouse.settings,
            f"select distinct country from analytics.fct_hourly_demand where product_code = '{spike['productCode']}' "
            f"and order_hour >= {last_7_days(demand_warehouse)}",
        )
    }
    assert countries == sold_in and spike["country"] in countries


def test_the_alert_link_opens_the_page_filtered_and_counts_show_zero(superset, browser, demand_warehouse):
    """The spike alert's button: the page opens on the spike's product and country. A country with
    no spike shows "0" spikes rising, not "No data"."""
    from retail_platform.dashboard.links import COUNTRY_FILTER_ID, filtered_dashboard_url
    from retail_platform.dashboard.spike_alerts import read_recent_spikes, spike_alert

    settings = demand_warehouse.settings
    (spike,) = [s for s in read_recent_spikes(settings, datetime(2000, 1, 1)) if s.is_rising]
    alert = spike_alert(spike, superset.settings.dashboard_url)
    link = alert.blocks[2]["elements"][0]["url"]
    page = login(browser, superset, "marketing")
    open_dashboard(page, superset, link)
    (popular,) = table_rows(page, "Popular products")
    assert product_label(spike.product_name, spike.product_code) in popular
    (country,) = table_rows(page, "Demand by country")
    assert country.startswith(spike.country)
    assert big_number(page, "Spikes rising now") == "1"

    quiet = next(
        c
        for (c,) in marts(settings, "select distinct country from analytics.fct_hourly_demand order by 1")
        if c != spike.country
    )
    open_dashboard(
        page,
        superset,
        filtered_dashboard_url(superset.settings.dashboard_url, {COUNTRY_FILTER_ID: ("country", quiet)}),
    )
    assert big_number(page, "Spikes rising now") == "0"


# Marketing is view-only: what each may do through the REST API (status codes), marketing vs admin.
WRITES = {
    "create a chart": ("POST", "/api/v1/chart/", lambda ids: {
        "slice_name": "mine", "viz_type": "table", "datasource_id": ids["dataset"], "datasource_type": "table"}),
    "create a dashboard": ("POST", "/api/v1/dashboard/", lambda ids: {"dashboard_title": "mine"}),
    "create a theme": ("POST", "/api/v1/theme/", lambda ids: {"theme_name": "mine", "json_data": "{}"}),
    "edit the shared dashboard": ("PUT", "/api/v1/dashboard/{dashboard}", lambda ids: {"dashboard_title": "Demand now"}),
    "edit a shared chart": ("PUT", "/api/v1/chart/{chart}", lambda ids: {"description": "changed"}),
}  # fmt: skip


def test_marketing_may_look_and_filter_but_not_create_or_change(superset, browser):
    admin = login(browser, superset, "admin")
    page = login(browser, superset, "marketing")
    dashboard = api(page, superset, "GET", "/api/v1/dashboard/demand-now").json()["result"]
    charts = api(page, superset, "GET", f"/api/v1/dashboard/{dashboard['id']}/charts").json()["result"]
    datasets = api(page, superset, "GET", "/api/v1/dataset/").json()["result"]
    spikes = next(d for d in datasets if d["table_name"] == "fct_demand_spikes")
    ids = {"dashboard": dashboard["id"], "chart": charts[0]["id"], "dataset": spikes["id"]}

    # allowed: the dashboard, its charts' data, the filters' state (what the page keeps while filtering)
    assert api(page, superset, "GET", f"/api/v1/dashboard/{ids['dashboard']}").status == 200
    query = {"datasource": {"id": ids["dataset"], "type": "table"}, "queries": [{"metrics": ["spikes"]}]}
    data = api(page, superset, "POST", "/api/v1/chart/data", query)
    assert data.status == 200, data.text()
    state = api(page, superset, "POST", f"/api/v1/dashboard/{ids['dashboard']}/filter_state", {"value": "{}"})
    assert state.status == 201, state.text()
    # refused: everything that creates or changes content; admin may do each (same request)
    refused, created = {}, []
    try:
        for action, (method, path, body) in WRITES.items():
            path = path.format(**ids)
            as_marketing = api(page, superset, method, path, body(ids))
            as_admin = api(admin, superset, method, path, body(ids))
            refused[action] = (as_marketing.status, as_admin.status)
            created += [f"{path}{r.json()['id']}" for r in (as_marketing, as_admin) if r.status == 201]
    finally:  # leave the shared state as it was, whoever created something
        for url in created:
            assert api(admin, superset, "DELETE", url).status == 200
    assert all(m == 403 and a in (200, 201) for m, a in refused.values()), refused


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
    }
    visible = api(page, superset, "GET", f"/api/v1/database/{database['id']}/schemas/").json()["result"]
    assert not [s for s in visible if s.rsplit(".", 1)[-1] == "ml"]
    ml = next(s for s in schemas if s.rsplit(".", 1)[-1] == "ml")
    tables = api(page, superset, "GET", f"/api/v1/database/{database['id']}/tables/?q=(schema_name:'{ml}')")
    assert tables.status in (403, 404) or tables.json()["count"] == 0
    query = {"database_id": database["id"], "sql": "select * from ml.ratings_ml_training", "runAsync": False}
    assert api(page, superset, "POST", "/api/v1/sqllab/execute/", query).status == 403
    assert api(admin, superset, "POST", "/api/v1/sqllab/execute/", query).status == 200, "admin reads ml"
    new_dataset = {"database": database["id"], "schema": "ml", "table_name": "ratings_ml_training"}
    assert api(page, superset, "POST", "/api/v1/dataset/", new_dataset).status == 403

    # A metric with a sub-query into ml, on a dataset marketing may read. Superset checks no table
    # access inside custom SQL, so sub-queries are off for every role (ALLOW_ADHOC_SUBQUERY stays
    # off): admin is refused the same way, and the same metric without the sub-query works.
    hourly = next(d for d in datasets if d["table_name"] == "fct_hourly_demand")

    def chart_data(user_page, sql: str):
        body = {
            "datasource": {"id": hourly["id"], "type": "table"},
            "queries": [{"metrics": [{"expressionType": "SQL", "label": "x", "sqlExpression": sql}]}],
        }
        return api(user_page, superset, "POST", "/api/v1/chart/data", body)

    sneaky = "(select count(*) from ml.ratings_ml_training)"
    as_marketing, as_admin = chart_data(page, sneaky), chart_data(admin, sneaky)
    assert as_marketing.status == as_admin.status == 400, (as_marketing.text(), as_admin.text())
    for refused in (as_marketing, as_admin):
        assert "sub-queries" in refused.text(), refused.text()
    assert chart_data(page, "count(*)").status == 200, "the same request without the sub-query is allowed"
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
    """Superset really stops and starts (a new server process), provisioning again on the way."""

    def counts() -> dict[str, int]:
        page = login(browser, superset, "admin")
        found = {
            kind: api(page, superset, "GET", f"/api/v1/{kind}/").json()["count"]
            for kind in ("chart", "dashboard")
        }
        page.close()
        return found

    before, old_pid = counts(), superset.pid()
    superset.stop()
    assert superset.pid() is None and not superset.healthy(), "Superset did not stop"
    superset.ensure_running()
    assert superset.pid() not in (None, old_pid), "no new Superset process"
    assert before == counts() == {"chart": len(CHARTS), "dashboard": 1}


def test_a_live_spike_reaches_the_alert_and_the_page(
    superset, browser, demand_warehouse, mariadb, admin, reader, tmp_path, monkeypatch
):
    """`retail live --spike-every`: a spike starts on the source, is extracted, detected, announced
    and shown as rising. The live store plays the last two hours in ~20 seconds (a simulated clock
    that ends just before now); the warehouse Superset reads gets the new build."""
    from retail_platform.sandbox.generator.live import SimulatedClock, read_live_spikes, run_live

    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    start = now.replace(minute=0, second=0) - timedelta(hours=2) + timedelta(minutes=1)
    source_db, _ = seed_default_source(admin, mariadb, "dashboard_live", ends_at=start)
    truth_dir, real_seconds = tmp_path / "truth", 20
    clock = SimulatedClock(start, speed=(now - timedelta(minutes=5) - start).total_seconds() / real_seconds)
    stats = run_live(
        source_db, rate_per_s=1.0, duration_s=real_seconds, tick_s=0.5, seed=7, truth_dir=truth_dir,
        spike_every=timedelta(hours=12), clock=clock,
    )  # fmt: skip
    (spike,) = read_live_spikes(truth_dir)
    assert stats.spikes_started == 1 and stats.spike_orders >= 2 + 4
    end = stats.last_order_timestamp + timedelta(seconds=1)
    assert end <= datetime.now(UTC).replace(tzinfo=None), "the simulated clock ran past now"

    monkeypatch.setenv("RETAIL_LAKE_URI", str(tmp_path / "lake"))  # this source's own lake, same warehouse
    settings = build_published_warehouse(
        reader.with_database(source_db.database), end=end.replace(tzinfo=UTC)
    )
    marketing = SlackReceiver()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_MARKETING", marketing.connection())
    try:
        announced = announce_spikes(settings, now=end.replace(tzinfo=UTC))
    finally:
        marketing.server.shutdown()
    headers = [m["blocks"][0]["text"]["text"] for m in marketing.messages]
    details = [m["blocks"][1]["fields"][0]["text"] for m in marketing.messages]
    assert any(spike["product_code"] in d for d in details), (spike, details, announced)
    assert any(spike["country"] in h for h in headers), headers

    page = login(browser, superset, "marketing")
    open_dashboard(page, superset)
    rows = table_rows(page, "Demand spikes")
    assert any("▲ rising now" in r and spike["product_code"] in r and spike["country"] in r for r in rows), (
        rows
    )
    assert int(big_number(page, "Spikes rising now")) >= 1
