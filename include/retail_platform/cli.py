"""The `retail` command: operate the platform from a shell or CI.

retail sandbox start|stop|status|env  the sandbox's servers (the private MariaDB that plays the replica)
retail generate --preset classic|prod [--scale F] [--seed N] [--variant modern|original] [--replace]
                [--ends-now]            the calendar shifted to end now, a spike rising (as ./platform run)
retail generate --from-dump FILE.sql   a classicmodels dump as it is, plus ratings
retail live --rate 2 --duration 60     keep inserting and shipping orders
retail show                            what is in the source (read-only user)
retail pipeline                        the main job end to end (./platform run)
retail recommender|shoppers|api|consumer|serve|dashboard|up|down ...   see ROOM_COMMANDS
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from retail_platform.settings import Settings


def _cmd_sandbox(args) -> int:
    """The sandbox's servers: start them, stop them, or print their connections for a shell."""
    from retail_platform.sandbox import launcher

    if args.action == "start":
        env = launcher.start(only=set(args.part) if args.part else None)
        for part in launcher.sandbox_parts():
            if part.is_running():
                print(f"{part.name}: {part.describe()}")
        print(f"connections: {', '.join(sorted(env)) or 'none (the environment sets them all)'}")
    elif args.action == "stop":
        print(f"stopped: {', '.join(launcher.stop()) or 'nothing was running'}")
    elif args.action == "status":
        running = [p for p in launcher.sandbox_parts() if p.is_running()]
        for part in launcher.sandbox_parts():
            print(f"{part.name}: {part.describe() if part in running else 'not running'}")
        return 0 if running else 1
    elif args.action == "env":
        # For a shell or ./platform: export the running parts' connections. Contains passwords.
        from retail_platform.sandbox.stack import running_airflow_env

        env = launcher.start() if args.start else launcher.running_env()
        if not args.connections_only:
            env |= running_airflow_env()
        print(launcher.export_lines(env), end="")
    return 0


def _cmd_generate(args) -> int:
    from retail_platform.sandbox.seed import seed_source

    if args.ends_now and args.from_dump:
        raise SystemExit("retail generate: --ends-now shifts a generated calendar; a dump keeps its dates")

    summary = seed_source(
        preset=args.preset,
        scale=args.scale,
        seed=args.seed,
        variant=args.variant,
        dump=Path(args.from_dump) if args.from_dump else None,
        replace=args.replace,
        truth_dir=Path(args.truth_dir) if args.truth_dir else None,
        ends_now=args.ends_now,
    )
    print(json.dumps(summary, indent=2))
    return 0


def _cmd_live(args) -> int:
    from datetime import timedelta

    from retail_platform.sandbox.generator.live import run_live
    from retail_platform.sandbox.seed import sandbox_source

    settings = Settings.from_env()
    _, admin = sandbox_source(settings)
    stats = run_live(
        admin,
        rate_per_s=args.rate,
        duration_s=args.duration or None,
        ship_fraction=args.ship_fraction,
        seed=args.seed,
        truth_dir=settings.ground_truth_dir / admin.database,
        spike_every=timedelta(minutes=args.spike_every) if args.spike_every > 0 else None,
    )
    print(json.dumps({k: v for k, v in vars(stats).items() if k != "inserted_order_numbers"}, default=str))
    return 0


def _cmd_show(args) -> int:
    from retail_platform.sandbox.seed import source_row_counts

    counts = source_row_counts()
    width = max(map(len, counts), default=5)
    for table, count in counts.items():
        print(f"{table:<{width}}  {count:>10,}")
    return 0


def _cmd_pipeline(args) -> int:
    from retail_platform.sandbox.pipeline import run_pipeline

    return run_pipeline(
        preset=args.preset,
        scale=args.scale,
        seed=args.seed,
        variant=args.variant,
        dump=Path(args.from_dump) if args.from_dump else None,
        regenerate=args.regenerate,
        stop_source=args.stop_source,
    )


def _cmd_contract(args) -> int:
    from retail_platform.contract.model import load_contract
    from retail_platform.sources import only_source, source_names
    from retail_platform.warehouse.dbt_sources import sources_in_step, sources_path, write_sources

    settings = Settings.from_env()
    if args.action == "bootstrap":
        return _bootstrap_contract(args, settings)
    chosen = (
        [only_source(settings.contracts_dir, args.source)]
        if args.source
        else source_names(settings.contracts_dir)
    )
    contracts = [load_contract(names.contract_path) for names in chosen]
    if args.action == "validate":
        for names, contract in zip(chosen, contracts, strict=True):
            print(f"{names.contract_path}: valid ({len(contract.tables)} tables)")
        return 0
    if args.check:
        stale = [c for c in contracts if not sources_in_step(c, settings.dbt_project_dir)]
        for contract in contracts:
            verdict = "differs from" if contract in stale else "matches"
            print(f"{sources_path(settings.dbt_project_dir, contract)} {verdict} the contract")
        if stale:
            print("run `retail contract dbt-sources`", file=sys.stderr)
        return 1 if stale else 0
    for contract in contracts:
        print(f"wrote {write_sources(contract, settings.dbt_project_dir)}")
    return 0


def _bootstrap_contract(args, settings: Settings) -> int:
    """A contract from the live replica: a source's existing one updated (--merge), or a new one
    (--source NAME --connection-id ID) written to the contracts folder."""
    from retail_platform.contract.bootstrap import bootstrap_contract
    from retail_platform.contract.model import ContractError, load_contract
    from retail_platform.source.connection import source_connection
    from retail_platform.source.introspect import read_live_schema
    from retail_platform.sources import only_source

    if args.connection_id:
        if not args.source:
            raise ContractError("a new contract needs --source NAME with --connection-id")
        path, connection_id, previous = (
            settings.contracts_dir / f"{args.source}.yml",
            args.connection_id,
            None,
        )
    else:
        names = only_source(settings.contracts_dir, args.source)
        path, connection_id = names.contract_path, names.connection_id
        previous = load_contract(path) if args.merge else None
    live = read_live_schema(source_connection(connection_id))
    contract = bootstrap_contract(
        live, previous=previous, connection_id=connection_id, name=args.source, only_tables=args.table or None
    )
    text = contract.to_yaml()
    if args.output == "-":
        print(text, end="")
    else:
        Path(args.output or path).write_text(text, encoding="utf-8")
        print(f"wrote {args.output or path}")
    return 0


def _cmd_extract(args) -> int:
    """One extraction run without Airflow (what the DAG's tasks do), for operators and debugging."""
    from datetime import UTC, datetime, timedelta

    from retail_platform.extract.runner import plan_run, run_local
    from retail_platform.extract.skeleton import BatchSkipped
    from retail_platform.sources import only_source

    settings = Settings.from_env()
    source = only_source(settings.contracts_dir, args.source).name
    end = (
        datetime.fromisoformat(args.end)
        if args.end
        else datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    )
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    start = end - timedelta(minutes=args.minutes)
    failures = 0
    for plan in plan_run(settings, source, start, end, tables=args.table or None):
        try:
            summary = run_local(settings, plan)
            print(
                f"{plan.table:<14} {summary['mode']:<12} {summary['rows']:>10,} rows  {summary['reconciliation']}"
            )
        except BatchSkipped as skipped:
            print(f"{plan.table:<14} skipped: {skipped}")
        except Exception as exc:  # report every table, then fail
            failures += 1
            print(f"{plan.table:<14} FAILED: {exc}", file=sys.stderr)
    return 1 if failures else 0


def _cmd_compact(args) -> int:
    """Compaction of the lake without Airflow (what the compact_lake DAG's tasks do)."""
    from retail_platform.lake.compaction import compact_source
    from retail_platform.lake.settings import LakeSettings
    from retail_platform.sources import source_names

    settings = LakeSettings.from_env()
    for names in source_names(settings.platform.contracts_dir):
        if args.source and names.name not in args.source:
            continue
        for result in compact_source(settings, names.load_contract(), tables=args.table or None):
            print(json.dumps(result.to_dict(), default=str))
    return 0


def _cmd_warehouse(args) -> int:
    from retail_platform.warehouse.dbt_runner import ensure_manifest, run_dbt

    settings = Settings.from_env()
    if args.action == "prepare":
        print(f"manifest: {ensure_manifest(settings)}")
    elif args.action == "build":
        from retail_platform.warehouse.transform import build_and_publish

        print(json.dumps(build_and_publish(settings, args.dbt_args), default=str))
    elif args.action == "export":
        from retail_platform.warehouse.export import export_training_table

        print(json.dumps(export_training_table(settings)))
    elif args.action == "docs":
        run_dbt(["docs", "generate"], settings)
        print(f"serving the dbt docs on http://127.0.0.1:{args.port} (Ctrl-C stops)")
        run_dbt(["docs", "serve", "--port", str(args.port), "--host", "127.0.0.1", "--no-browser"], settings)
    return 0


def _cmd_settings(args) -> int:
    from retail_platform.settings import settings_table

    print(settings_table(), end="")
    return 0


def _cmd_dbt_lint(args) -> int:
    import subprocess

    from retail_platform.warehouse.dbt_runner import dbt_env

    settings = Settings.from_env()
    project = settings.project_dir
    paths = args.paths or ["dbt/models", "dbt/data-tests", "dbt/analyses"]
    command = [str(Path(sys.executable).parent / "sqlfluff"), "fix" if args.fix else "lint", *paths]
    if args.fix:
        command.append("--force")
    return subprocess.run(command, cwd=project, env=os.environ | dbt_env(settings)).returncode


def _cmd_schema(args) -> int:
    from retail_platform.contract.model import load_contract
    from retail_platform.sources import only_source

    settings = Settings.from_env()
    if args.action == "watch":
        from retail_platform.schema_watch.notify import notify_changes
        from retail_platform.schema_watch.watch import run_watch

        report = run_watch(settings, only_source(settings.contracts_dir, args.source).name)
        notify_changes(report, settings)
        print(
            json.dumps(
                {k: report[k] for k in ("seen_at", "query_s", "tables", "paused", "still_paused", "resumed")}
                | {"changes": len(report["drift"]), "announced": len(report["announce"])},
                indent=2,
            )
        )
        return 0
    from retail_platform.alerts import deliver
    from retail_platform.schema_watch.impact import impact_report, render, report_alert
    from retail_platform.schema_watch.watch import lineage_for

    contract = only_source(settings.contracts_dir, args.source).load_contract()
    sources = [bool(args.ddl), bool(args.ddl_file), bool(args.contract)]
    if sum(sources) != 1:
        print("retail schema impact: give exactly one of --ddl, --ddl-file, --contract", file=sys.stderr)
        return 2
    ddl = args.ddl or (Path(args.ddl_file).read_text() if args.ddl_file else None)
    proposed = load_contract(args.contract) if args.contract else None
    report = impact_report(
        contract, lineage_for(settings, compile_when_stale=True), ddl=ddl, proposed=proposed
    )
    print(render(report, args.format))
    if args.post_to_slack:
        print(f"\nposted to {deliver(report_alert(report), settings)}", file=sys.stderr)
    return 1 if report["breaking"] and not args.no_fail else 0


def _add_generation_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset", default="classic", help="classic (real dump sizes) or prod (~100k customers)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiply the preset's sizes")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--variant",
        default="modern",
        choices=["modern", "original"],
        help="modern adds orderTimestamp and updated_at cursors; original is v3.1 as is",
    )
    parser.add_argument("--from-dump", metavar="FILE", help="load a classicmodels dump instead of generating")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retail", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "sandbox", help="the sandbox's servers (private MariaDB, ...): start, stop, status, env"
    )
    p.add_argument("action", choices=["start", "stop", "status", "env"])
    p.add_argument("--part", action="append", help="start: only these parts (repeatable)")
    p.add_argument("--start", action="store_true", help="env: start the parts first")
    p.add_argument(
        "--connections-only",
        action="store_true",
        help="env: the parts' connections, not the running `up` stack's Airflow and platform settings "
        "(the tests keep their own)",
    )
    p.set_defaults(func=_cmd_sandbox)

    p = sub.add_parser("generate", help="build the source database")
    _add_generation_args(p)
    p.add_argument("--replace", action="store_true", help="drop and rebuild existing tables")
    p.add_argument("--truth-dir", help="where ground truth goes (default <state>/ground_truth/<database>)")
    p.add_argument(
        "--ends-now",
        action="store_true",
        help="shift the calendar to end now, the last spike rising through the last hours (as "
        "`./platform run` seeds it); default: the preset's own dates (classic: the published dump's)",
    )
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("live", help="keep inserting and updating orders at a rate")
    p.add_argument("--rate", type=float, default=2.0, help="orders a second")
    p.add_argument("--duration", type=float, default=60.0, help="seconds (0: until interrupted)")
    p.add_argument("--ship-fraction", type=float, default=0.3, help="orders shipped per order inserted")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--spike-every",
        type=float,
        default=60.0,
        metavar="MINUTES",
        help="start a demand spike at once and then every MINUTES (0: none)",
    )
    p.set_defaults(func=_cmd_live)

    p = sub.add_parser("show", help="row counts in the source (read-only user)")
    p.set_defaults(func=_cmd_show)

    p = sub.add_parser("contract", help="the source contracts")
    p.add_argument("action", choices=["validate", "bootstrap", "dbt-sources"])
    p.add_argument("--source", help="this source's contract (default: every one; bootstrap: the only one)")
    p.add_argument("--connection-id", help="bootstrap: a new source's connection id (with --source NAME)")
    p.add_argument(
        "--merge", action="store_true", help="bootstrap: keep owners, modes and notes of the current one"
    )
    p.add_argument("--table", action="append", help="bootstrap: only these tables (repeatable)")
    p.add_argument("--output", help="bootstrap: where to write (default the contract's path; - for stdout)")
    p.add_argument(
        "--check", action="store_true", help="dbt-sources: fail if the sources YAML is out of step"
    )
    p.set_defaults(func=_cmd_contract)

    p = sub.add_parser("extract", help="one extraction run without Airflow")
    p.add_argument("--end", help="interval end (ISO, UTC); default the start of this hour")
    p.add_argument("--minutes", type=int, default=60, help="interval length")
    p.add_argument("--table", action="append", help="only these tables (repeatable)")
    p.add_argument("--source", help="the source (default: the only contract)")
    p.set_defaults(func=_cmd_extract)

    p = sub.add_parser("compact", help="compact the lake's batches and remove superseded files")
    p.add_argument("--source", action="append", help="only these sources (repeatable)")
    p.add_argument("--table", action="append", help="only these tables (repeatable)")
    p.set_defaults(func=_cmd_compact)

    p = sub.add_parser("warehouse", help="dbt: prepare the manifest, build, export, docs")
    p.add_argument("action", choices=["prepare", "build", "export", "docs"])
    p.add_argument("--port", type=int, default=8580, help="docs: port on 127.0.0.1")
    p.add_argument("dbt_args", nargs="*", help="build: extra dbt arguments (e.g. --select tag:ml)")
    p.set_defaults(func=_cmd_warehouse)

    p = sub.add_parser("schema", help="schema watch: one watch run, or the impact of a planned change")
    p.add_argument("action", choices=["watch", "impact"])
    p.add_argument("--source", help="the source (default: the only contract)")
    p.add_argument("--ddl", help="impact: planned MySQL DDL, e.g. 'ALTER TABLE products DROP COLUMN MSRP'")
    p.add_argument("--ddl-file", help="impact: a file of planned DDL statements")
    p.add_argument("--contract", help="impact: a proposed source contract (YAML)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument(
        "--post-to-slack", action="store_true", help="impact: also post the report (Slack or the alert file)"
    )
    p.add_argument("--no-fail", action="store_true", help="impact: exit 0 even when a change is breaking")
    p.set_defaults(func=_cmd_schema)

    p = sub.add_parser("settings", help="every setting: type, default, validation, meaning (markdown)")
    p.set_defaults(func=_cmd_settings)

    p = sub.add_parser("dbt-lint", help="sqlfluff (dbt templater) over the dbt project")
    p.add_argument("--fix", action="store_true")
    p.add_argument("paths", nargs="*")
    p.set_defaults(func=_cmd_dbt_lint)

    p = sub.add_parser("pipeline", help="the main job end to end")
    _add_generation_args(p)
    p.add_argument("--regenerate", action="store_true", help="rebuild the source even if it is seeded")
    p.add_argument("--stop-source", action="store_true", help="stop the private MariaDB at the end")
    p.set_defaults(func=_cmd_pipeline)
    return parser


# Commands whose room has a command line of its own: `retail <command> ...` runs `<module>.main(args)`.
ROOM_COMMANDS = {
    "recommender": "retail_platform.recommender.cli",  # train, evaluate, versions, publish, rollback
    "shoppers": "retail_platform.serving.simulator",  # the shopper simulator (events on the stream)
    "api": "retail_platform.serving.server",  # the recommendation API (uvicorn)
    "consumer": "retail_platform.serving.consumer",  # the stream consumer
    "serve": "retail_platform.sandbox.serving",  # sandbox: the stream, vector database, consumer and API
    "dashboard": "retail_platform.sandbox.superset",  # sandbox: Superset with the dashboards as code
    "up": "retail_platform.sandbox.stack",  # sandbox: the whole platform on its schedules
    "down": "retail_platform.sandbox.stack",
    "status": "retail_platform.sandbox.stack",
}


def _room_command(argv: list[str]) -> int:
    import importlib

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = importlib.import_module(ROOM_COMMANDS[argv[0]])
    return module.main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ROOM_COMMANDS:
        return _room_command(argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if getattr(args, "duration", None) == 0:
        args.duration = None
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a clear one-line error for operators; -v shows the traceback
        if args.verbose:
            raise
        print(f"retail {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
