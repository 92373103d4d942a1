"""AWS Glue (Spark) job: extract one planned table over JDBC into the same lake layout.

Airflow's GlueJobOperator uploads this file as the job script and the ``retail_platform``
package as ``--extra-py-files``. The job runs the extraction skeleton (``extract.skeleton``: the
same plan, cursor bounds, SQL, retried reconciliation, rewrite guard, manifest and commit as the
local engine) and supplies only how rows are read: a Spark JDBC read, written by Spark as Parquet
in the batch folder. So both engines write the same rows, types and manifests. Locally it runs
on PySpark in local mode (tests), with the MariaDB JDBC driver.

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
    """JDBC access to the replica from Spark, in UTC with the statement timeout set per session.

    The Glue engine's ``SourceSession``: every query is a JDBC read of its own (it sees now)."""

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

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(r) for r in self._reader().option("query", sql).load().collect()]

    def row(self, sql: str) -> tuple:
        return self.rows(sql)[0]

    def scalar(self, sql: str):
        rows = self.rows(sql)
        return rows[0][0] if rows else None

    def close(self) -> None:
        pass  # Spark opens a JDBC connection per read

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


def _partition_key(plan) -> str | None:
    """The integer key Spark splits the read on. A full snapshot stays one JDBC query (one consistent
    read): reconciliation accepts a table that changed during the read only on that ground, and
    partitions would each see another state."""
    from retail_platform.contract.model import ExtractionMode
    from retail_platform.contract.types import parse_type

    if plan.mode is ExtractionMode.APPEND_ONLY:
        return plan.cursor
    if plan.mode is ExtractionMode.FULL or len(plan.primary_key) != 1:
        return None
    key = plan.primary_key[0]
    return key if parse_type(plan.column_type(key)).is_integer else None


class GlueEngine:
    """The Glue engine: Spark reads the query over JDBC and writes the batch's Parquet files."""

    def __init__(self, spark, source: SparkSource, *, partitions: int = 4):
        from retail_platform.extract.skeleton import ExtractEngine

        self.name = ExtractEngine.GLUE
        self.spark, self.source, self.partitions = spark, source, partitions

    def source_errors(self) -> tuple[type[BaseException], ...]:
        from py4j.protocol import Py4JJavaError

        return (Py4JJavaError,)

    def open_session(self) -> SparkSource:
        return self.source

    def read(self, plan, query: str, *, lake, attempt, extracted_at, with_checksums, on_started):
        from pyspark.sql import functions as F

        from retail_platform.extract import queries

        started = time.perf_counter()
        key = _partition_key(plan)
        low = high = None
        if key is not None:
            low, high = self.source.row(queries.key_range_sql(query, key))
        df = self.source.dataframe(query, key, low, None if high is None else high + 1, self.partitions)
        # preferTimestampNTZ reads TIMESTAMP as wall time in the session's zone (UTC): the cast makes it an instant.
        selected = [F.col(f"`{c.name}`").cast(spark_type(c.type)).alias(c.name) for c in plan.columns]
        df = (
            df.select(*selected)
            .withColumn("_extracted_at", F.lit(extracted_at).cast("timestamp"))
            .withColumn("_batch_id", F.lit(plan.batch_id))
        )
        out_dir = f"{lake.batch_dir(plan.table, plan.batch_id)}/spark-{attempt}"
        df.write.mode("overwrite").option("compression", "zstd").parquet(lake.storage.url(out_dir))
        return _read_back(plan, lake, out_dir, with_checksums, started)


def _read_back(plan, lake, out_dir: str, with_checksums: bool, started: float):
    """What Spark wrote: each file hashed, counted and (full snapshots) checksummed."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from retail_platform.extract.checksums import ArrowChecksums
    from retail_platform.extract.reconcile import Stats
    from retail_platform.extract.skeleton import ReadResult
    from retail_platform.lake.batches import WrittenFile

    paths = sorted(
        info.path
        for info in lake.storage.list(out_dir)
        if info.is_file and info.base_name.endswith(".parquet")
    )
    checksums = ArrowChecksums(plan.columns) if with_checksums else None
    files, max_seen = [], None
    for path in paths:
        data = lake.storage.read_bytes(path)
        pf = pq.ParquetFile(pa.BufferReader(data))
        n = pf.metadata.num_rows
        files.append(WrittenFile(path, n, len(data), hashlib.sha256(data).hexdigest()))
        if checksums is not None:
            for batch in pf.iter_batches():
                checksums.update(batch)
        if plan.cursor is not None and n:
            high = pc.max(pf.read(columns=[plan.cursor]).column(plan.cursor)).as_py()
            if high is not None and (max_seen is None or high > max_seen):
                max_seen = high
    sums = checksums.result() if checksums is not None else None
    return ReadResult(
        files=files,
        rows=sum(f.rows for f in files),
        max_cursor=max_seen,
        checksums=Stats(*sums) if sums is not None else None,
        seconds=time.perf_counter() - started,
    )


def extract_with_spark(spark, plan, source: SparkSource, lake, *, partitions: int = 4) -> dict:
    from retail_platform.extract.plan import TablePlan
    from retail_platform.extract.skeleton import extract_table

    engine = GlueEngine(spark, source, partitions=partitions)
    return extract_table(engine, TablePlan.from_dict(plan), lake)


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
    from retail_platform.extract.plan import TablePlan
    from retail_platform.lake.batches import RawLake
    from retail_platform.lake.storage import LakeStorage

    plan = TablePlan.from_json(args.plan)
    lake = RawLake(LakeStorage.from_uri(args.lake_uri, s3_endpoint_url=args.s3_endpoint_url), plan.source)
    spark = build_spark(f"retail-extract-{plan.source}-{plan.table}")
    source = SparkSource(spark, source_from_args(args), args.jdbc_driver, args.statement_timeout_s)
    return extract_with_spark(spark, plan, source, lake, partitions=args.partitions)


if __name__ == "__main__":
    main()
