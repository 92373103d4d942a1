"""AWS Glue (Spark) job: extract one planned table over JDBC into the same lake layout.

Airflow's GlueJobOperator uploads this file as the job script and the ``retail_platform``
package as ``--extra-py-files``; the job reads the same plan, cursor bounds, SQL and
reconciliation as the local engine and commits through the same lake code, so both
engines write the same rows, types and manifests. Locally it runs on PySpark in local
mode (tests), with the MariaDB JDBC driver.

Arguments (Glue passes them as ``--name value``; unknown ones such as ``--JOB_NAME`` are ignored):

``--plan``                 the table's plan (JSON) from the extraction DAG's plan task
``--lake-uri``             lake root (s3://bucket/prefix; a local path in tests)
``--source-secret-id``     Secrets Manager secret with host, port, username, password, dbname
``--source-url-env``       or: an environment variable holding a mysql:// URL (local runs)
``--jdbc-driver``          JDBC driver class (default org.mariadb.jdbc.Driver)
``--statement-timeout-s``  per-statement timeout on the replica (default 900)
``--partitions``           parallel JDBC reads for tables with an integer key (default 4)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit

log = logging.getLogger("retail_platform.glue_job")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="glue_job")
    parser.add_argument("--plan", required=True)
    parser.add_argument("--lake-uri", "--lake_uri", dest="lake_uri", required=True)
    parser.add_argument("--source-secret-id", "--source_secret_id", dest="source_secret_id")
    parser.add_argument("--source-url-env", "--source_url_env", dest="source_url_env")
    parser.add_argument(
        "--jdbc-driver", "--jdbc_driver", dest="jdbc_driver", default="org.mariadb.jdbc.Driver"
    )
    parser.add_argument(
        "--statement-timeout-s", "--statement_timeout_s", dest="statement_timeout_s", type=int, default=900
    )
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--s3-endpoint-url", "--s3_endpoint_url", dest="s3_endpoint_url")
    args, _unknown = parser.parse_known_args(argv)
    if not (args.source_secret_id or args.source_url_env):
        parser.error("one of --source-secret-id or --source-url-env is required")
    return args


def source_from_args(args):
    from retail_platform.source.connection import MySQLConnectionInfo

    if args.source_url_env:
        raw = os.environ.get(args.source_url_env)
        if not raw:
            raise ValueError(f"--source-url-env {args.source_url_env}: the variable is not set")
        parts = urlsplit(raw)
        return MySQLConnectionInfo(
            parts.hostname,
            parts.port or 3306,
            unquote(parts.username or ""),
            unquote(parts.password or ""),
            parts.path.lstrip("/"),
        )
    import boto3

    secret = json.loads(
        boto3.client("secretsmanager").get_secret_value(SecretId=args.source_secret_id)["SecretString"]
    )
    return MySQLConnectionInfo(
        secret["host"],
        int(secret.get("port", 3306)),
        secret["username"],
        secret["password"],
        secret["dbname"],
    )


def jdbc_url(info, variables: dict[str, str] | None = None) -> str:
    """A jdbc:mysql: URL (Spark's MySQL dialect) with session variables for every connection."""
    url = f"jdbc:mysql://{info.host}:{info.port}/{info.database}"
    if variables:
        url += "?sessionVariables=" + ",".join(f"{name}={value}" for name, value in variables.items())
    return url


class SparkSource:
    """JDBC access to the replica from Spark, in UTC with the statement timeout set per session."""

    def __init__(self, spark, info, driver: str, statement_timeout_s: int):
        from retail_platform.extract.queries import session_variables

        self.spark, self.info, self.driver = spark, info, driver
        self.url = jdbc_url(info)
        # The statement-timeout variable differs between MariaDB and MySQL: ask the server first.
        version = self.scalar("SELECT VERSION() AS version")
        self.url = jdbc_url(info, session_variables(version, statement_timeout_s))

    def _reader(self):
        return (
            self.spark.read.format("jdbc")
            .option("url", self.url)
            .option("driver", self.driver)
            .option("user", self.info.user)
            .option("password", self.info.password)
            .option("fetchsize", "10000")
            .option("preferTimestampNTZ", "true")
        )

    def scalar(self, sql: str):
        rows = self._reader().option("query", sql).load().collect()
        return rows[0][0] if rows else None

    def rows(self, sql: str):
        return self._reader().option("query", sql).load().collect()[0]

    def dataframe(
        self, sql: str, partition_column: str | None, lower: int | None, upper: int | None, partitions: int
    ):
        reader = self._reader()
        if partition_column and lower is not None and upper is not None and upper > lower and partitions > 1:
            return (
                reader.option("dbtable", f"({sql}) AS extract_subquery")
                .option("partitionColumn", partition_column)
                .option("lowerBound", str(lower))
                .option("upperBound", str(upper))
                .option("numPartitions", str(partitions))
                .load()
            )
        return reader.option("query", sql).load()


def spark_type(declared: str):
    """The Spark type whose Parquet form equals the local engine's Arrow type."""
    import pyarrow as pa
    from pyspark.sql import types as T

    from retail_platform.contract.types import parse_type

    arrow = parse_type(declared).arrow
    if pa.types.is_int8(arrow):
        return T.ByteType()
    if pa.types.is_int16(arrow) or pa.types.is_uint8(arrow):
        return T.ShortType()
    if pa.types.is_int32(arrow) or pa.types.is_uint16(arrow):
        return T.IntegerType()
    if pa.types.is_integer(arrow):
        return T.LongType()
    if pa.types.is_decimal(arrow):
        return T.DecimalType(arrow.precision, arrow.scale)
    if pa.types.is_float32(arrow):
        return T.FloatType()
    if pa.types.is_float64(arrow):
        return T.DoubleType()
    if pa.types.is_date(arrow):
        return T.DateType()
    if pa.types.is_timestamp(arrow):
        return T.TimestampType() if arrow.tz else T.TimestampNTZType()
    if pa.types.is_binary(arrow):
        return T.BinaryType()
    return T.StringType()


def extract_with_spark(spark, plan: dict, source: SparkSource, lake, *, partitions: int = 4) -> dict:
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from retail_platform.contract.types import parse_type
    from retail_platform.extract import queries
    from retail_platform.extract.bounds import next_watermark, resolve_bounds
    from retail_platform.extract.manifest import build_manifest, normalise_cursor_value
    from retail_platform.extract.reconcile import (
        ACCEPTED,
        ArrowChecksums,
        ReconciliationError,
        Stats,
        checksummed_columns,
        reconciliation_record,
        verify,
    )

    table, batch_id = plan["table"], plan["batch_id"]
    if plan.get("skip_reason"):
        log.warning("%s skipped: %s", table, plan["skip_reason"])
        return {"table": table, "skipped": plan["skip_reason"]}
    if plan.get("error"):
        raise RuntimeError(plan["error"])
    db, cursor = plan["database"], plan["cursor"]
    previous = lake.read_manifest(table, batch_id)
    watermark = lake.watermark(table)
    bounds = resolve_bounds(
        plan,
        manifest=previous,
        watermark=watermark,
        max_key=lambda: source.scalar(queries.max_key_sql(db, table, cursor)),
        source_now=lambda: source.scalar(queries.source_now_sql()).replace(tzinfo=UTC),
    )
    columns = [c["name"] for c in plan["columns"]]
    query = queries.select_sql(db, table, columns, cursor, bounds["lower"], bounds["upper"])
    full = plan["mode"] == "full"
    integer_key = cursor if plan["mode"] == "append_only" else None
    # A full snapshot stays one JDBC query (one consistent read): reconciliation accepts a table
    # that changed during the read only on that ground, and partitions would each see another state.
    if integer_key is None and not full and len(plan["primary_key"]) == 1:
        key_type = next(c["type"] for c in plan["columns"] if c["name"] == plan["primary_key"][0])
        if parse_type(key_type).is_integer:
            integer_key = plan["primary_key"][0]

    def stats(with_checksums: bool) -> Stats:
        if with_checksums:
            names = checksummed_columns(plan)
            row = source.rows(queries.checksum_sql(db, table, names))
            return Stats(
                int(row[0]), {n: (int(row[1 + 2 * i]), int(row[2 + 2 * i])) for i, n in enumerate(names)}
            )
        return Stats(
            int(source.scalar(queries.count_sql(db, table, cursor, bounds["lower"], bounds["upper"])))
        )

    for attempt_no in range(1, 4):
        attempt = uuid.uuid4().hex[:12]
        extracted_at = datetime.now(UTC)
        started = time.perf_counter()
        before = stats(full)
        key_low = key_high = None
        if integer_key is not None:
            low_high = source.rows(queries.key_range_sql(query, integer_key))
            key_low, key_high = low_high[0], low_high[1]
        df = source.dataframe(
            query, integer_key, key_low, None if key_high is None else key_high + 1, partitions
        )
        selected = []
        for column in plan["columns"]:
            target = spark_type(column["type"])
            col = F.col(f"`{column['name']}`")
            # preferTimestampNTZ reads TIMESTAMP as wall time in the session's zone (UTC): make it an instant.
            selected.append(col.cast(target).alias(column["name"]))
        df = (
            df.select(*selected)
            .withColumn("_extracted_at", F.lit(extracted_at).cast("timestamp"))
            .withColumn("_batch_id", F.lit(batch_id))
        )
        out_dir = f"{lake.batch_dir(table, batch_id)}/spark-{attempt}"
        df.write.mode("overwrite").option("compression", "zstd").parquet(lake.storage.url(out_dir))
        files = sorted(
            info.path
            for info in lake.storage.list(out_dir)
            if info.is_file and info.base_name.endswith(".parquet")
        )
        extract_s = time.perf_counter() - started
        checksums = ArrowChecksums(plan) if full else None
        rows, max_seen = 0, None
        entries = []
        for path in files:
            pf = pq.ParquetFile(path, filesystem=lake.storage.fs)
            n = pf.metadata.num_rows
            rows += n
            if checksums is not None:
                for batch in pf.iter_batches():
                    checksums.update(batch)
            if cursor is not None and n:
                import pyarrow.compute as pc

                high = pc.max(pf.read(columns=[cursor]).column(cursor)).as_py()
                if high is not None and (max_seen is None or high > max_seen):
                    max_seen = high
            entries.append(lake.file_entry(table, batch_id, path, n))
        after = stats(full)
        extracted = checksums.stats() if full else Stats(rows)
        verdict, detail = verify(plan, extracted, before, after, accept_changes=attempt_no >= 2)
        if verdict == "changed_during_read":
            log.warning("%s: %s", table, detail)
        if verdict in ACCEPTED:
            break
        log.warning("%s attempt %d: %s", table, attempt_no, detail)
    else:
        raise ReconciliationError(f"{table}: reconciliation with the source failed: {detail}")
    max_seen = normalise_cursor_value(max_seen)
    manifest = build_manifest(
        plan,
        bounds=bounds,
        max_seen=max_seen,
        rows=rows,
        files=entries,
        reconciliation=reconciliation_record(verdict, detail, after, attempt_no),
        query=query,
        engine="glue",
        attempt=attempt,
        extracted_at=extracted_at,
        timings={"extract_s": round(extract_s, 3)},
    )
    lake.commit(manifest, watermark=next_watermark(plan, bounds, max_seen, watermark))
    log.info("%s batch %s: %d rows committed by Spark", table, batch_id, rows)
    return manifest


def build_spark(app_name: str = "retail-extract"):
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
    )
    jar = os.environ.get("RETAIL_JDBC_JAR", "/usr/share/java/mariadb-java-client.jar")
    if os.path.exists(jar):
        builder = builder.config("spark.jars", jar)
    return builder.getOrCreate()


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    from retail_platform.lake.batches import RawLake
    from retail_platform.lake.storage import LakeStorage

    plan = json.loads(args.plan)
    lake = RawLake(LakeStorage.from_uri(args.lake_uri, s3_endpoint_url=args.s3_endpoint_url), plan["source"])
    spark = build_spark(f"retail-extract-{plan['table']}")
    source = SparkSource(spark, source_from_args(args), args.jdbc_driver, args.statement_timeout_s)
    return extract_with_spark(spark, plan, source, lake, partitions=args.partitions)


if __name__ == "__main__":
    main()
