"""`retail recommender ...`: train, list, publish, roll back and prune recommender versions.

retail recommender train [--build ID] [--publish]   train and evaluate on an export build (newest by default)
retail recommender versions                         the registry, with the gate's verdicts and what serves
retail recommender status                           what the vector database serves now
retail recommender publish VERSION [--force]        publish a registered version (--force: a refused one)
retail recommender rollback [--to VERSION]          back to the previous version (or VERSION), no retraining
retail recommender prune                            drop versions past the retention window
"""

from __future__ import annotations

import argparse
import json
import sys

from retail_platform.recommender.settings import RecommenderSettings


def _train(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import publish_version, vectors_conninfo
    from retail_platform.recommender.training import train_version

    conninfo = vectors_conninfo()
    outcome = train_version(settings, build_id=args.build, conninfo=conninfo)
    print(outcome.report)
    print(f"\nversion {outcome.version} ({outcome.path}): {outcome.gate.summary()}")
    if args.publish and outcome.approved:
        pointer = publish_version(settings, conninfo, outcome.version)
        print(f"published: {pointer.version} (previous {pointer.previous_version})")
    return 0 if outcome.approved else 3


def _versions(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import vectors_conninfo
    from retail_platform.recommender.registry import Registry
    from retail_platform.vectors.store import current_pointer

    pointer = current_pointer(vectors_conninfo())
    marks = {pointer.version: "current", pointer.previous_version: "previous"} if pointer else {}
    print(
        f"{'version':<26} {'created':<20} {'build':<24} {'gate':<9} {'recipe':<14} {'NDCG@10 known':>13}"
        "  serving"
    )
    for m in Registry.from_settings(settings.platform).versions():
        ndcg = (m.get("evaluation") or {}).get("summary", {}).get("model", {}).get("known")
        print(
            f"{m['version']:<26} {m['created_at'][:19]:<20} {m['training_build']:<24} {m['status']:<9} "
            f"{m.get('recipe', 'lightfm'):<14} {ndcg if ndcg is None else f'{ndcg:.4f}':>13}  "
            f"{marks.get(m['version'], '')}" + (f"  ({m['provisional']})" if m.get("provisional") else "")
        )
    return 0


def _status(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import vectors_conninfo
    from retail_platform.vectors.store import current_pointer

    pointer = current_pointer(vectors_conninfo())
    print(json.dumps(pointer.__dict__ if pointer else None, default=str, indent=2))
    return 0


def _publish(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import publish_version, vectors_conninfo
    from retail_platform.recommender.registry import Registry

    manifest = Registry.from_settings(settings.platform).manifest(args.version)
    if manifest is None:
        print(f"version {args.version} is not in the registry", file=sys.stderr)
        return 1
    if manifest["status"] != "approved" and not args.force:
        print(
            f"version {args.version} was refused by the gate ({'; '.join(manifest['gate']['reasons'])}); "
            "pass --force to publish it anyway",
            file=sys.stderr,
        )
        return 1
    pointer = publish_version(settings, vectors_conninfo(), args.version)
    print(f"published: {pointer.version} (previous {pointer.previous_version})")
    return 0


def _rollback(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import rollback, vectors_conninfo

    pointer = rollback(settings, vectors_conninfo(), args.to)
    print(
        f"serving {pointer.version} (previous {pointer.previous_version}), switched at {pointer.switched_at}"
    )
    return 0


def _prune(args, settings: RecommenderSettings) -> int:
    from retail_platform.recommender.publishing import prune, vectors_conninfo

    print(json.dumps(prune(settings, vectors_conninfo()), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="retail recommender", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train and evaluate on an export build; exit 3 when the gate refuses")
    p.add_argument("--build", help="export build id (default: the newest)")
    p.add_argument("--publish", action="store_true", help="publish the version when the gate approves it")
    p.set_defaults(func=_train)
    sub.add_parser("versions", help="the registry").set_defaults(func=_versions)
    sub.add_parser("status", help="what serves now").set_defaults(func=_status)
    p = sub.add_parser("publish", help="publish a registered version")
    p.add_argument("version")
    p.add_argument("--force", action="store_true", help="publish a version the gate refused")
    p.set_defaults(func=_publish)
    p = sub.add_parser("rollback", help="switch back without retraining")
    p.add_argument("--to", help="the version to serve (default: the previous one)")
    p.set_defaults(func=_rollback)
    sub.add_parser("prune", help="drop versions past the retention window").set_defaults(func=_prune)
    return parser


def main(argv: list[str]) -> int:
    """``argv[0]`` is ``recommender`` (the `retail` command routes here)."""
    args = build_parser().parse_args(argv[1:])
    try:
        return args.func(args, RecommenderSettings.from_env())
    except Exception as exc:  # one clear line for operators
        print(f"retail recommender {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
