"""Test data for the dashboard and spike-alert tests: the default sandbox source (its calendar
ending now, a spike rising), a warehouse built and published from it the way the transform DAG
does it, and a live store playing hours in seconds."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from retail_platform.contract.model import load_contract
from retail_platform.extract.local_engine import extract_batch
from retail_platform.extract.plan import plan_extraction
from retail_platform.lake.batches import RawLake
from retail_platform.lake.storage import LakeStorage
from retail_platform.settings import Settings
from retail_platform.source.connection import MySQLConnectionInfo
from retail_platform.source.introspect import read_live_schema
from retail_platform.warehouse.transform import build_and_publish

ROOT = Path(__file__).resolve().parents[1]
# What `./platform run` seeds (retail_platform.sandbox.pipeline.run_pipeline's defaults, the calendar
# ending now; a test checks).
DEFAULT_GENERATION = {"preset": "classic", "scale": 1.0, "seed": 42, "variant": "modern"}


def seed_default_source(admin: MySQLConnectionInfo, mariadb, name: str, *, ends_at: datetime):
    """The default `./platform run` source in database classicmodels_<name>, its calendar ending at
    ``ends_at`` (UTC); returns the admin connection to it and the generated source (ground truth)."""
    from retail_platform.sandbox.generator.build import generate
    from retail_platform.sandbox.generator.load import load_source
    from retail_platform.sandbox.generator.presets import get_preset

    db = admin.with_database(f"classicmodels_{name}")
    source = generate(
        get_preset(DEFAULT_GENERATION["preset"], DEFAULT_GENERATION["scale"]),
        seed=DEFAULT_GENERATION["seed"],
        variant=DEFAULT_GENERATION["variant"],
        ends_at=ends_at,
    )
    load_source(source, db, replace=True)
    mariadb.grant_reader(db.database)
    return db, source


def build_published_warehouse(reader: MySQLConnectionInfo, *, end: datetime) -> Settings:
    """Extract every table into the lake (one batch up to ``end``) and build, test and publish the
    warehouse with dbt, as the DAGs do; the environment names the lake and the warehouse."""
    contract = load_contract(ROOT / "include" / "contracts" / "classicmodels.yml")
    settings = Settings.from_env()
    lake = RawLake(LakeStorage.from_uri(settings.lake_uri), contract.source.name)
    for plan in plan_extraction(
        contract, read_live_schema(reader), interval_start=end - timedelta(hours=1), interval_end=end
    ):
        extract_batch(plan, reader=reader, lake=lake)
    build_and_publish(settings)
    return settings


class SlackReceiver:
    """A real HTTP server standing in for marketing's Slack incoming webhook."""

    def __init__(self):
        self.messages: list[dict] = []
        received = self.messages

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append(json.loads(body))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/T0MKT/B0MKT/marketingsecret"

    def connection(self) -> str:
        return json.dumps({"conn_type": "slackwebhook", "password": self.url})
