"""moto's server as the sandbox's Kinesis: the events stream and the recommendations stream.

A ``moto_server`` process of its own, bound to 127.0.0.1 on a free port (or ``RETAIL_KINESIS_PORT``),
with a pid file under ``<state>/kinesis/``; it outlives the process that started it, like the other
sandbox parts, and keeps its streams in memory only (a restart starts them empty; the consumer then
ignores checkpoints of the earlier streams). Other processes reach it through the variables boto3
reads: ``AWS_ENDPOINT_URL_KINESIS`` and test credentials. In production the streams are Kinesis
Data Streams and none of this runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retail_platform.sandbox.processes import free_port, pid_in_file, port_free, stop_process
from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.serving.settings import ServingSettings

ENDPOINT_VAR = "AWS_ENDPOINT_URL_KINESIS"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
TEST_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
START_TIMEOUT_S = 30


class LocalKinesisError(RuntimeError):
    pass


@dataclass
class LocalKinesis:
    base_dir: Path
    streams: tuple[str, ...]
    shards: int = 2
    requested_port: int | None = None

    name = "kinesis"

    @classmethod
    def from_settings(cls, settings: SandboxSettings | None = None) -> LocalKinesis:
        settings = settings or SandboxSettings.from_env()
        serving = ServingSettings.from_env()
        return cls(
            settings.state_dir / "kinesis",
            (serving.events_stream, serving.recommendations_stream),
            serving.kinesis_shards,
            serving.kinesis_port,
        )

    # ------------------------------------------------------------------ the part's interface
    @property
    def env_names(self) -> list[str]:
        return [ENDPOINT_VAR]

    def connection_env(self) -> dict[str, str]:
        return {ENDPOINT_VAR: self.endpoint} | TEST_CREDENTIALS

    def describe(self) -> str:
        return f"Kinesis (moto's server) on {self.endpoint}, streams {', '.join(self.streams)}"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ state
    @property
    def pid_file(self) -> Path:
        return self.base_dir / "moto.pid"

    @property
    def instance_file(self) -> Path:
        return self.base_dir / "instance.json"

    @property
    def port(self) -> int:
        try:
            return int(json.loads(self.instance_file.read_text())["port"])
        except (FileNotFoundError, KeyError, ValueError):
            raise LocalKinesisError(f"the sandbox's Kinesis in {self.base_dir} was never started") from None

    def pid(self) -> int | None:
        return pid_in_file(self.pid_file)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/data.json", timeout=2) as response:
                return response.status == 200
        except (OSError, LocalKinesisError):
            return False

    def is_running(self) -> bool:
        return self.pid() is not None and self._answers()

    # ------------------------------------------------------------------ lifecycle
    def ensure_running(self) -> LocalKinesis:
        if not self.is_running():
            self._start()
        self.ensure_streams()
        return self

    def _choose_port(self) -> int:
        if self.requested_port:
            if not port_free(self.requested_port):
                raise LocalKinesisError(
                    f"RETAIL_KINESIS_PORT={self.requested_port} is in use by another process"
                )
            return self.requested_port
        return free_port()

    def _start(self) -> None:
        if self.pid() is not None:
            self.stop()
        self.base_dir.mkdir(parents=True, exist_ok=True)
        port = self._choose_port()
        self.instance_file.write_text(json.dumps({"port": port}))
        command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
        with open(self.base_dir / "moto.log", "ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid_file.write_text(str(process.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise LocalKinesisError(
                    f"moto_server exited with {process.returncode} (log: {self.base_dir / 'moto.log'})"
                )
            if self._answers():
                return
            time.sleep(0.2)
        raise LocalKinesisError(f"moto_server did not answer within {START_TIMEOUT_S} s")

    def client(self):
        import boto3

        return boto3.client(
            "kinesis",
            endpoint_url=self.endpoint,
            region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def ensure_streams(self, streams: tuple[str, ...] | None = None) -> None:
        client = self.client()
        existing = set(client.list_streams()["StreamNames"])
        for stream in streams or self.streams:
            if stream not in existing:
                client.create_stream(StreamName=stream, ShardCount=self.shards)
                client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})

    def stop(self, timeout: float = 10) -> None:
        pid = self.pid()
        if pid is None:
            return
        stop_process(pid, timeout=timeout, group=True, kill_after=True)
