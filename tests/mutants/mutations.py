"""The mutations the check applies: realistic bugs on the paths that guard data, and the tests that
must catch each one.

Each row names the file, the exact original text (it must occur once in that file), the mutated
text and the pytest node ids that must fail once the mutation is applied. A row whose catching
test does not exist yet has ``tests=()`` and a ``todo`` saying who writes it: the check reports it
as "no test" and fails, so a gap cannot pass unnoticed.

Keep the original texts short: enough to be unique, so an unrelated edit near them does not make
the row stale (a stale row is reported, never skipped).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mutation:
    name: str
    path: str  # relative to the repository root
    original: str
    mutated: str
    tests: tuple[str, ...]
    why: str  # the bug, as a reviewer would describe it
    todo: str = ""  # who writes the catching test, while ``tests`` is empty


EXTRACTION = "tests/test_extraction.py"

MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        name="publish-after-failed-test",
        path="dags/transform_warehouse.py",
        original="@task(pool=WAREHOUSE_POOL, outlets=[ANALYTICS_MARTS])\n    def publish_warehouse(",
        mutated='@task(pool=WAREHOUSE_POOL, outlets=[ANALYTICS_MARTS], trigger_rule="all_done")\n'
        "    def publish_warehouse(",
        tests=("tests/test_faults.py::test_failed_dbt_tests_never_reach_the_marts",),
        why="the transform DAG publishes the build after a failed dbt test task",
    ),
    Mutation(
        name="append-only-short-read-accepted",
        path="include/retail_platform/extract/reconcile.py",
        original="if extracted.rows != after.rows:\n            return (\n                Verdict.RETRY,",
        mutated="if extracted.rows > after.rows:\n            return (\n                Verdict.RETRY,",
        tests=(
            f"{EXTRACTION}::test_an_append_only_read_that_comes_up_short_once_is_retried",
            f"{EXTRACTION}::test_an_append_only_read_that_always_comes_up_short_commits_nothing",
        ),
        why="an append-only batch with fewer rows than the source's key range is accepted",
    ),
    Mutation(
        name="rerun-reads-the-old-range",
        path="include/retail_platform/extract/bounds.py",
        original="upper = max(upper, source_now()) if upper is not None else None",
        mutated="upper = upper",
        tests=(f"{EXTRACTION}::test_backfill_of_a_past_interval_is_idempotent",),
        why="a rerun of an incremental batch reads only its old range: rows updated since move out "
        "of it and the rewrite drops them",
    ),
    Mutation(
        name="rerun-forgets-its-lower-bound",
        path="include/retail_platform/extract/bounds.py",
        original="        return _reused(plan, manifest, source_now)\n",
        mutated="        pass\n",
        tests=(f"{EXTRACTION}::test_backfill_of_a_past_interval_is_idempotent",),
        why="a rerun plans its range from the watermark, not from the batch it replaces",
    ),
    Mutation(
        name="watermark-moves-back",
        path="include/retail_platform/lake/batches.py",
        original='if previous is None or _later(watermark.get("high_water"), previous.get("high_water")):',
        mutated="if True:",
        tests=(f"{EXTRACTION}::test_backfill_of_a_past_interval_is_idempotent",),
        why="a backfill of an old interval moves the table's watermark back",
    ),
    Mutation(
        name="commit-rereads-every-manifest",
        path="include/retail_platform/lake/batches.py",
        original="current = TableIndex.from_doc(table, doc) if doc is not None else self.index_from_manifests(table)",
        mutated="self.committed_batches(table)\n"
        "            current = TableIndex.from_doc(table, doc) if doc is not None else self.index_from_manifests(table)",
        tests=(
            "tests/test_lake_compaction.py::test_a_commits_reads_and_writes_do_not_grow_with_the_batches_it_joins",
        ),
        why="each commit reads every manifest again: its cost grows with the table's batches",
    ),
    Mutation(
        name="consumer-ignores-its-checkpoint",
        path="include/retail_platform/serving/consumer.py",
        original="committed = checkpoint.sequence if checkpoint else None",
        mutated="committed = None",
        tests=(
            "tests/test_serving_stream.py::"
            "test_a_consumer_killed_at_random_points_loses_and_duplicates_no_output",
        ),
        why="a restarted stream consumer starts from the shard's beginning, not its checkpoint",
    ),
    Mutation(
        name="lambda-keeps-refused-records",
        path="include/retail_platform/serving/lambda_handler.py",
        original="delivered = answered[:first_failed]",
        mutated="delivered = answered",
        tests=(
            "tests/test_serving_stream.py::"
            "test_the_lambda_handler_retried_from_the_first_refused_record_keeps_each_record_once",
        ),
        why="the Lambda keeps in the lake the records the stream refused: Lambda's retry writes them twice",
    ),
    Mutation(
        name="rollback-not-announced",
        path="include/retail_platform/vectors/store.py",
        original='conn.execute("select pg_notify(%s, %s)", (CHANNEL,',
        mutated='action != "rollback" and conn.execute("select pg_notify(%s, %s)", (CHANNEL,',
        tests=("tests/test_vectors.py::test_every_switch_is_announced_with_notify",),
        why="a rollback switches the vector store without NOTIFY: serving keeps the rolled-back model",
    ),
    Mutation(
        name="gate-ignores-production",
        path="include/retail_platform/recommender/gate.py",
        original="if model >= floor:",
        mutated="if True:",
        tests=("tests/test_recommender.py::test_every_gate_rule_and_setting",),
        why='the gate ignores the "not more than 5% below production" rule',
    ),
    Mutation(
        name="gate-drops-its-margin",
        path="include/retail_platform/recommender/gate.py",
        original="needed = c.baseline_ndcg * (1 + margin)",
        mutated="needed = c.baseline_ndcg",
        tests=("tests/test_recommender.py::test_every_gate_rule_and_setting",),
        why="the gate drops its 10% margin over popularity",
    ),
    Mutation(
        name="no-deadline-check-after-the-model",
        path="include/retail_platform/serving/handler.py",
        original="if anchor else None\n            self._check(deadline)",
        mutated="if anchor else None\n            pass",
        tests=(
            "tests/test_serving_events.py::test_a_model_step_that_crosses_the_deadline_serves_the_fallback",
        ),
        why="a slow model answer is served as a model answer past the deadline",
    ),
    Mutation(
        name="notifier-reraises",
        path="plugins/retail_airflow/notifiers.py",
        original='log.exception("the failure alert could not be built; sending a plain one")',
        mutated="raise",
        tests=(
            "tests/test_faults.py::test_a_notifier_whose_proper_message_cannot_be_built_still_sends_a_plainer_one",
        ),
        why="the failure notifier re-raises instead of sending its plainer alert",
    ),
    Mutation(
        name="connection-falls-back-to-the-sandbox",
        path="include/retail_platform/connections.py",
        original="raw = os.environ.get(conn_env_var(conn_id))\n    if not raw:",
        mutated='raw = os.environ.get(conn_env_var(conn_id)) or "mysql://reader@127.0.0.1:3306/classicmodels"\n'
        "    if not raw:",
        tests=("tests/test_vectors.py::test_a_missing_connection_is_named",),
        why="a process outside Airflow (API, consumer, Lambda) uses a sandbox server when its "
        "connection is missing",
    ),
    Mutation(
        name="airflow-connection-falls-back-to-the-sandbox",
        path="include/retail_platform/connections.py",
        original="        raise ConnectionNotConfigured(\n"
        '            f"connection {conn_id!r} is not configured: looked in {_where(conn_id, True)}"\n'
        "        ) from None",
        mutated='        return parse_connection(conn_id, "mysql://reader@127.0.0.1:3306/classicmodels")',
        tests=("tests/test_faults.py::test_a_missing_connection_fails_at_once_and_names_it",),
        why="a task whose connection is missing extracts from a sandbox server instead of failing",
    ),
    Mutation(
        name="handler-ignores-what-a-new-shopper-browsed",
        path="include/retail_platform/serving/handler.py",
        original="encoder.embed(event.features(), browsed)",
        mutated="encoder.embed(event.features())",
        tests=(
            "tests/test_recommender.py::test_the_evaluation_ranks_exactly_what_the_handler_serves[taste]",
        ),
        why="the handler embeds a new shopper from their features alone, while the evaluation that "
        "approved the version folded their cart in: what is served is not what was scored",
    ),
    Mutation(
        name="evaluation-ignores-the-cart",
        path="include/retail_platform/recommender/evaluation.py",
        original="else embed(int(c), items[[cart]] if cart >= 0 and not missing[cart] else None)",
        mutated="else embed(int(c), None)",
        tests=(
            "tests/test_recommender.py::test_the_evaluation_ranks_exactly_what_the_handler_serves[taste]",
        ),
        why="the evaluation scores new shoppers without their cart, while the handler folds it in",
    ),
)
