"""The schema watch's cost on the replica: its one information_schema read, timed.

    ./platform python benchmarks/watch_query.py [--state-dir .state/bench-spikes] [--runs 50]

Run after benchmarks/score_spikes.py (whose state folder holds the prod preset), or point
--state-dir at any state folder with a seeded source.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-spikes"))
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    os.environ["RETAIL_STATE_DIR"] = str(Path(args.state_dir).resolve())
    from retail_platform.sandbox.seed import sandbox_source, source_row_counts
    from retail_platform.settings import Settings
    from retail_platform.source.connection import connect
    from retail_platform.source.introspect import read_live_schema

    settings = Settings.from_env()
    reader, _ = sandbox_source(settings)
    counts = source_row_counts(settings)
    conn = connect(reader)
    timings = []
    for _ in range(args.runs):
        started = time.perf_counter()
        live = read_live_schema(reader, conn)
        timings.append((time.perf_counter() - started) * 1000)
    conn.close()
    columns = sum(len(t.columns) for t in live.tables.values())
    print(
        f"source: {counts.get('orderdetails', 0):,} order lines, {len(live.tables)} tables, {columns} columns"
    )
    print(
        f"information_schema read over {args.runs} runs: median {statistics.median(timings):.1f} ms, "
        f"p95 {sorted(timings)[int(0.95 * len(timings)) - 1]:.1f} ms, max {max(timings):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
