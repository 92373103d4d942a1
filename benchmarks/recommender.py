"""The recommender at a preset: training time, the evaluation table, publish time, top-10 query times.

    ./platform python benchmarks/recommender.py [--preset prod] [--scale 1.0] [--seed 42] [--regenerate]
    ./platform python benchmarks/recommender.py --variants taste taste:scale_prior=5 lightfm:epochs=5 ...

Works in its own state folder (.state/bench-reco: its own MariaDB, lake, warehouse and PostgreSQL):
generates the preset with its ground truth, extracts it, builds the warehouse and exports the
training build (once; `--regenerate` rebuilds), then trains a version exactly as the retraining DAG
does (the default recipes: the taste model, then LightFM and the favourite line if the gate refuses
it; `RETAIL_RECOMMENDER_MODEL=lightfm` for LightFM alone; evaluation on the time split, scored as served, beside the popular list as served, popularity,
popularity by country, the favourite line, line x scale, item-item co-occurrence, the ceiling and the
version published before, if a previous run published one), publishes it to pgvector, and measures
exact top-10 queries with real user vectors and, for an HNSW index, its recall@10 against exact.

``--variants`` instead: one time split of the same build, the baselines and the ceiling evaluated
once, then each variant (``name:field=value,...``, fields of ``TrainParams``; the name is the
recipe unless ``recipe=`` says otherwise) fitted on the split and scored as served; prints the
variants table of docs/parts/recommender.md (no vector database needed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def prepare(args, state: Path) -> None:
    import shutil

    from retail_platform.extract.runner import plan_run, run_local
    from retail_platform.sandbox.mariadb import LocalMariaDB
    from retail_platform.sandbox.seed import seed_source
    from retail_platform.settings import Settings
    from retail_platform.warehouse.export import export_training_table
    from retail_platform.warehouse.transform import build_and_publish

    settings = Settings.from_env()
    seed_source(preset=args.preset, scale=args.scale, seed=args.seed, replace=True, settings=settings)
    shutil.rmtree(state / "lake", ignore_errors=True)
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    for plan in plan_run(settings, "classicmodels", end - timedelta(hours=1), end):
        run_local(settings, plan)
    build_and_publish(settings)
    print(f"export: {export_training_table(settings)}", file=sys.stderr)
    LocalMariaDB.from_settings().stop()


def percentiles(values: list[float]) -> dict:
    ms = np.array(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def query_figures(conninfo: str, queries: int = 1000) -> dict:
    """Exact top-10 by inner product over the current items, with real user vectors; then HNSW."""
    from retail_platform.vectors import store

    model, _ = store.load_current(conninfo)
    rng = np.random.default_rng(0)
    queries = min(queries, len(model.user_vectors))  # a tiny preset has fewer customers
    users = model.user_vectors[rng.choice(len(model.user_vectors), queries, replace=False)]
    out = {"items": len(model.product_codes), "users": len(model.customer_numbers)}
    with store.connect(conninfo, autocommit=True) as conn:
        exact, times = [], []
        for vector in users:
            started = time.perf_counter()
            exact.append([c for c, _ in store.top_items(conn, vector, 10)])
            times.append(time.perf_counter() - started)
        out["exact_user_to_item"] = percentiles(times)
        times = []
        for code in rng.choice(model.product_codes, 200):
            started = time.perf_counter()
            store.similar_items(conn, str(code), 10)
            times.append(time.perf_counter() - started)
        out["exact_item_to_item"] = percentiles(times)
        table = f'{store.SCHEMA}."items_{model.version}"'
        started = time.perf_counter()
        conn.execute(f"drop index if exists {store.SCHEMA}.bench_hnsw")  # left by an interrupted run
        conn.execute(f"create index bench_hnsw on {table} using hnsw (embedding vector_ip_ops)")
        out["hnsw_build_s"] = round(time.perf_counter() - started, 2)
        for ef in (40, 200):
            conn.execute(f"set hnsw.ef_search = {ef}")
            hits, times = 0, []
            for vector, truth in zip(users[:300], exact[:300], strict=True):
                started = time.perf_counter()
                rows = conn.execute(
                    f"select product_code from {table} order by embedding <#> %s limit 10", (vector,)
                ).fetchall()
                times.append(time.perf_counter() - started)
                hits += len({r[0] for r in rows} & set(truth))
            out[f"hnsw_ef{ef}"] = {"recall_at_10": round(hits / (10 * len(times)), 3)} | percentiles(times)
        conn.execute(f"drop index {store.SCHEMA}.bench_hnsw")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="prod")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--state-dir", default=str(ROOT / ".state" / "bench-reco"))
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="NAME:FIELD=VALUE,...",
        help="score these variants on one split instead of training a version (see above)",
    )
    parser.add_argument(
        "--queries-only",
        action="store_true",
        help="no training: publish a copy of the newest registered version (timed), then the query figures",
    )
    args = parser.parse_args()
    state = Path(args.state_dir).resolve()
    os.environ.update(
        RETAIL_STATE_DIR=str(state),
        RETAIL_LAKE_URI=str(state / "lake"),
        RETAIL_DUCKDB_PATH=str(state / "warehouse" / "retail.duckdb"),
        RETAIL_GROUND_TRUTH_DIR=str(state / "ground_truth" / "classicmodels"),
    )
    for name in [n for n in os.environ if n.startswith("AIRFLOW_CONN_")]:
        del os.environ[name]  # always the benchmark's own servers
    if args.regenerate or not (state / "lake" / "ml" / "ratings_ml_training" / "_latest.json").exists():
        prepare(args, state)

    if args.variants:
        print(variants_table(args.variants))
        return 0

    from retail_platform.sandbox.postgres import LocalPostgres

    postgres = LocalPostgres.from_settings()
    was_running = postgres.is_running()
    conninfo = postgres.ensure_running().url()
    try:
        result = measure_queries_only(conninfo) if args.queries_only else measure(args, conninfo)
    finally:
        if not was_running:
            postgres.stop()  # its data stays: the next run evaluates against the version published here
    print(json.dumps(result, indent=2, default=str))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 0


def measure_queries_only(conninfo: str) -> dict:
    import dataclasses

    from retail_platform.recommender.registry import Registry
    from retail_platform.settings import Settings
    from retail_platform.vectors import store

    registry = Registry.from_settings(Settings.from_env())
    newest = registry.versions()[-1]["version"]
    payload = dataclasses.replace(registry.payload(newest), version=f"bench{int(time.time())}")
    started = time.perf_counter()
    store.publish(conninfo, payload)
    publish_s = time.perf_counter() - started
    figures = query_figures(conninfo)
    store.rollback(conninfo)
    return {
        "copy_of": newest,
        "publish_s": publish_s,
        "users": len(payload.customer_numbers),
        "queries": figures,
    }


def parse_variant(spec: str):
    """``taste:scale_prior=5`` -> (name, TrainParams); the name is the recipe unless ``recipe=`` is given."""
    import dataclasses

    from retail_platform.recommender.model import TrainParams

    name, _, assignments = spec.partition(":")
    types = {f.name: type(f.default) for f in dataclasses.fields(TrainParams)}
    values = {"recipe": name}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        if key not in types:
            raise SystemExit(f"--variants {spec}: {key!r} is not a field of TrainParams ({', '.join(types)})")
        values[key] = value == "True" if types[key] is bool else types[key](value)
    return spec, TrainParams(**values)


def variants_table(specs: list[str]) -> str:
    from retail_platform.recommender import evaluation as ev
    from retail_platform.recommender.ceiling import ceiling_scorer
    from retail_platform.recommender.data import training_data
    from retail_platform.recommender.settings import RecommenderSettings
    from retail_platform.recommender.training import _model_scorer, train
    from retail_platform.warehouse.export import read_export

    variants = [parse_variant(spec) for spec in specs]  # a typo fails before any work
    settings = RecommenderSettings.from_env()
    data = training_data(read_export(settings.platform))
    split = ev.time_split(data, settings.test_fraction)
    products = ev.catalogue_index(data)
    segments = split.segments(products)
    references = ev.baseline_scorers(data, split, products)
    ceiling = ceiling_scorer(settings.ground_truth_dir, products)
    if ceiling is not None:
        references["ceiling"] = ceiling
    scores = {
        (segment, name): ev.evaluate_method(
            name, segment, scorer, customers, split, products, carts
        ).per_customer
        for segment, customers, carts in segments
        for name, scorer in references.items()
    }
    baselines = [b for b in references if b != "ceiling"]
    known_best = max(baselines, key=lambda b: scores[(ev.KNOWN, b)].mean())
    cart_best = max(  # no customer with a cart (a tiny preset): any baseline, nothing to compare
        baselines, key=lambda b: float(np.mean(scores[(ev.NEW_WITH_CART, b)] if len(split.carts) else 0))
    )
    new_base = scores[(ev.NEW, "popular_by_country")]
    cart_base = scores[(ev.NEW_WITH_CART, cart_best)]
    lines = [
        f"known customers {len(split.known):,}, new {len(split.new):,} (with a cart {len(cart_base):,}); "
        f"best baseline (known): {known_best} {scores[(ev.KNOWN, known_best)].mean():.4f}; popularity by "
        f"country (new) {new_base.mean():.4f}; best baseline (new with a cart): {cart_best} "
        f"{cart_base.mean() if len(cart_base) else float('nan'):.4f}"
        + (f"; ceiling (known) {scores[(ev.KNOWN, 'ceiling')].mean():.4f}" if ceiling else ""),
        "",
        "| variant | known NDCG@10 | x best | paired vs best [95% CI] | of ceiling | new NDCG@10 "
        "| new vs popularity by country [95% CI] | new with a cart NDCG@10 | vs its best baseline [95% CI] "
        "| fit CPU s |",
        "| --- | ---: | ---: | --- | ---: | ---: | --- | ---: | --- | ---: |",
    ]
    for spec, params in variants:
        model = train(data, split.train, params)
        scorer = _model_scorer(data, model)
        known, new, with_cart = (
            ev.evaluate_method(spec, segment, scorer, customers, split, products, carts).per_customer
            for segment, customers, carts in segments
        )
        best = scores[(ev.KNOWN, known_best)]
        of_ceiling = f"{known.mean() / scores[(ev.KNOWN, 'ceiling')].mean():.3f}" if ceiling else "–"
        lines.append(
            f"| {spec} | {known.mean():.4f} | {known.mean() / best.mean():.3f} | {ev.paired(known, best)} "
            f"| {of_ceiling} | {new.mean():.4f} | {ev.paired(new, new_base) if len(new) else '–'} "
            f"| {with_cart.mean() if len(with_cart) else float('nan'):.4f} "
            f"| {ev.paired(with_cart, cart_base) if len(with_cart) else '–'} "
            f"| {model.train_cpu_seconds:.1f} |"
        )
    return "\n".join(lines)


def measure(args, conninfo: str) -> dict:
    from retail_platform.recommender.publishing import publish_version
    from retail_platform.recommender.settings import RecommenderSettings
    from retail_platform.recommender.training import train_version

    settings = RecommenderSettings.from_env()
    outcome = train_version(settings, conninfo=conninfo)
    print(outcome.report, file=sys.stderr)
    started = time.perf_counter()
    publish_version(settings, conninfo, outcome.version)
    publish_s = time.perf_counter() - started
    return {
        "preset": args.preset,
        "scale": args.scale,
        "version": outcome.version,
        "gate": outcome.gate.to_dict(),
        "timings": outcome.timings | {"publish_s": publish_s},
        "report": outcome.report,
        "queries": query_figures(conninfo),
    }


if __name__ == "__main__":
    sys.exit(main())
