"""The Glue engine's tasks: stage the job's artifacts, run one Glue job per table, collect results."""

from __future__ import annotations

from airflow.providers.amazon.aws.hooks.s3 import S3Hook
from airflow.providers.amazon.aws.operators.glue import GlueJobOperator
from airflow.sdk import task

from retail_platform.extract.glue_submit import (
    GLUE_SCRIPT,
    artifacts_bucket,
    job_definition,
    job_name,
    package_key,
    package_zip,
    script_args,
)
from retail_platform.extract.plan import TablePlan
from retail_platform.settings import Settings
from retail_platform.sources import SourceNames

AWS_CONN_ID = "aws_default"


def glue_extraction(settings: Settings, names: SourceNames, plans):
    """Wire the Glue engine after the plan task; returns the per-table summaries (XCom)."""

    @task
    def stage_glue_runs(plans: list[dict]) -> list[dict]:
        data = package_zip()
        bucket = artifacts_bucket(settings)
        key = package_key(data)
        S3Hook(aws_conn_id=AWS_CONN_ID).load_bytes(data, key=key, bucket_name=bucket, replace=True)
        runnable = [p for p in map(TablePlan.from_dict, plans) if p.runnable]
        return [script_args(plan, settings, f"s3://{bucket}/{key}") for plan in runnable]

    runs = GlueJobOperator.partial(
        task_id="extract_table",
        job_name=job_name(settings, names.name),
        script_location=str(GLUE_SCRIPT),  # uploaded to s3://<bucket>/artifacts/glue-scripts/
        s3_bucket=artifacts_bucket(settings)
        if settings.lake_uri.startswith("s3://")
        else settings.glue_scripts_bucket,
        iam_role_name=settings.glue_iam_role,
        create_job_kwargs=job_definition(settings),
        replace_script_file=True,
        concurrent_run_limit=settings.replica_pool_slots,
        wait_for_completion=True,
        aws_conn_id=AWS_CONN_ID,
        pool=names.pool,
    ).expand(script_args=stage_glue_runs(plans))

    # all_done: the tables whose jobs did commit are still published when another job failed.
    @task(trigger_rule="all_done")
    def collect_glue_results(plans: list[dict]) -> list[dict]:
        from retail_platform.extract.runner import collect_committed

        return collect_committed(settings, plans)

    results = collect_glue_results(plans)
    runs >> results
    return results
