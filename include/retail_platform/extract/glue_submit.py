"""What the Glue engine needs from the DAG: the job's artifacts and each table's arguments."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import retail_platform
from retail_platform.extract.plan import TablePlan
from retail_platform.settings import Settings

GLUE_SCRIPT = Path(retail_platform.__file__).parent / "extract" / "glue_job.py"


def package_zip() -> bytes:
    """The retail_platform package as a zip for Glue's --extra-py-files (deterministic bytes)."""
    root = Path(retail_platform.__file__).parent
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(root.rglob("*")):
            relative = path.relative_to(root)
            if (
                path.is_file()
                and path.suffix in (".py", ".yml", ".yaml", ".json")
                and "__pycache__" not in relative.parts
                and relative.parts[0] != "sandbox"  # the sandbox never runs in production
            ):
                info = zipfile.ZipInfo(str(Path("retail_platform") / relative), (2020, 1, 1, 0, 0, 0))
                archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def artifacts_bucket(settings: Settings) -> str:
    if settings.glue_scripts_bucket:
        return settings.glue_scripts_bucket
    parts = urlsplit(settings.lake_uri)
    if parts.scheme != "s3":
        raise ValueError(
            "the glue engine needs an S3 lake (RETAIL_LAKE_URI=s3://bucket/prefix) or RETAIL_GLUE_SCRIPTS_BUCKET"
        )
    return parts.netloc


def package_key(data: bytes) -> str:
    return f"artifacts/retail_platform/retail_platform-{hashlib.sha256(data).hexdigest()[:16]}.zip"


def job_name(settings: Settings, source: str) -> str:
    """The source's Glue job (RETAIL_GLUE_JOB_NAME, with {source} for the source's name)."""
    return settings.glue_job_name.format(source=source)


def source_secret_id(settings: Settings, source: str) -> str:
    """The secret the source's job reads its replica credentials from (with {source} filled in)."""
    return settings.glue_source_secret_id.format(source=source)


def script_args(plan: TablePlan | dict, settings: Settings, package_uri: str) -> dict:
    plan = TablePlan.from_dict(plan)
    args = {
        "--plan": plan.to_json(),
        "--lake-uri": settings.lake_uri,
        "--source-secret-id": source_secret_id(settings, plan.source),
        "--statement-timeout-s": str(settings.statement_timeout_s),
        "--extra-py-files": package_uri,
    }
    if settings.s3_endpoint_url:
        args["--s3-endpoint-url"] = settings.s3_endpoint_url
    return args


def job_definition(settings: Settings) -> dict:
    """CreateJob arguments beyond what GlueJobOperator sets (AWS Glue 5.0: Spark 3.5, Python 3.11)."""
    return {
        "GlueVersion": "5.0",
        "WorkerType": "G.1X",
        "NumberOfWorkers": 2,
        "Timeout": 60,
        "DefaultArguments": {"--enable-metrics": "true", "--job-language": "python"},
    }
