"""moto's server as the sandbox's Kinesis: the events stream and the recommendations stream.

A process of its own (``python -m retail_platform.sandbox.kinesis``: moto's WSGI app in werkzeug's
threaded server, as ``moto_server`` runs it), bound to 127.0.0.1 on the port kept in
``<state>/kinesis/instance.json`` (chosen once: ``RETAIL_KINESIS_PORT`` or a free one), with a pid file
beside it. It outlives the process that started it, like the other sandbox parts, or runs under
supervisord (`./platform serve|up`). It keeps its streams in memory only: each start creates the
streams afresh before it reports ready, so a restarted Kinesis has its streams back (empty: records
not yet consumed are lost, and the consumer ignores checkpoints of the earlier streams). Other
processes reach it through the variables boto3 reads: ``AWS_ENDPOINT_URL_KINESIS`` and test
credentials. In production the streams are Kinesis Data Streams and none of this runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from retail_platform.sandbox.processes import (
    free_port,
    pid_in_file,
    port_free,
    stop_process,
    wait_while_alive,
)
from retail_platform.sandbox.settings import SandboxSettings
from retail_platform.sandbox.supervisor import Program
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
            # moto's dashboard page: constant size (data.json would return every record held).
            with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=2) as response:
                return response.status == 200
        except (OSError, LocalKinesisError):
            return False

    def is_running(self) -> bool:
        return self.pid() is not None and self._answers()

    # ------------------------------------------------------------------ lifecycle
    def ensure_running(self) -> LocalKinesis:
        # A live process that does not answer is slow, not dead: wait for it, never replace it.
        if not self.is_running() and not wait_while_alive(self.pid, self._answers, "Kinesis"):
            self._start()
        self.ensure_streams()
        return self

    def _saved_port(self) -> int | None:
        try:
            return int(json.loads(self.instance_file.read_text())["port"])
        except (FileNotFoundError, KeyError, ValueError):
            return None

    def _choose_port(self) -> int:
        """The port kept from the first start (clients hold it), else the requested or a free one."""
        for candidate in (self.requested_port, self._saved_port()):
            if candidate and port_free(candidate):
                return candidate
        if self.requested_port:
            raise LocalKinesisError(f"RETAIL_KINESIS_PORT={self.requested_port} is in use by another process")
        return free_port()

    def server_argv(self) -> list[str]:
        """The server in the foreground on the kept port (chosen and saved here on first use)."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        port = self._choose_port()
        self.instance_file.write_text(json.dumps({"port": port}))
        streams = [arg for stream in self.streams for arg in ("--stream", stream)]
        return [
            sys.executable, "-m", __name__, "--port", str(port), "--shards", str(self.shards),
            "--pid-file", str(self.pid_file), *streams,
        ]  # fmt: skip

    def program(self) -> Program:
        return Program(self.name, self.server_argv(), dict(os.environ), priority=10, stopwaitsecs=10)

    def after_start(self) -> None:
        self.ensure_streams()

    def _start(self) -> None:
        argv = self.server_argv()
        with open(self.base_dir / "moto.log", "ab") as log:
            process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_answering(process)

    def wait_answering(
        self, process: subprocess.Popen | None = None, timeout: float = START_TIMEOUT_S
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process is not None and process.poll() is not None:
                raise LocalKinesisError(
                    f"the Kinesis server exited with {process.returncode} (log: {self.base_dir / 'moto.log'})"
                )
            if self.pid() is not None and self._answers():
                return
            time.sleep(0.2)
        raise LocalKinesisError(f"the Kinesis server did not answer within {timeout:.0f} s")

    def client(self):
        return _client(self.endpoint)

    def ensure_streams(self, streams: tuple[str, ...] | None = None) -> None:
        _create_streams(self.client(), streams or self.streams, self.shards)

    def stop(self, timeout: float = 10) -> None:
        pid = self.pid()
        if pid is None:
            return
        stop_process(pid, timeout=timeout, group=True, kill_after=True)


def _client(endpoint: str):
    import boto3

    return boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name=TEST_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


def _create_streams(client, streams, shards: int) -> None:
    existing = set(client.list_streams()["StreamNames"])
    for stream in streams:
        if stream not in existing:
            client.create_stream(StreamName=stream, ShardCount=shards)
            client.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 0.2})


# ---------------------------------------------------------------------- the server process
def _serve(port: int, streams: list[str], shards: int, pid_file: Path) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    # Bound here, in the main thread, so a taken port fails the start at once.
    server = make_server(
        "127.0.0.1", port, DomainDispatcherApplication(create_backend_app), True,
        request_handler=MotoRequestHandler,
    )  # fmt: skip
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The streams exist before the pid file says "running": a consumer never sees them missing
    # because of this start.
    _create_streams(_client(f"http://127.0.0.1:{port}"), streams, shards)
    pid_file.write_text(str(os.getpid()))
    logging.info("Kinesis on 127.0.0.1:%d with streams %s", port, ", ".join(streams) or "(none)")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the sandbox's Kinesis (moto) with its streams")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--stream", action="append", default=[])
    parser.add_argument("--pid-file", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    _serve(args.port, args.stream, args.shards, args.pid_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
