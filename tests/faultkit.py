"""Real network parts for fault tests: a TCP proxy that can refuse or cut connections, and a Slack
webhook receiver that can fail or hang. Both are real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow.fs as pafs


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target. `down()` refuses new connections and cuts open ones
    (a server that went away); `up()` serves again on the same port; `cut_after(n)` cuts every
    connection once n bytes have come back from the target (a failure mid-read)."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = self._free_port()
        self.bytes_back = 0
        self._cut_after: int | None = None
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.up()

    @staticmethod
    def _free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            listener.close()
        self._close_all()

    def cut_after(self, n_bytes: int | None) -> None:
        with self._lock:
            self.bytes_back = 0
            self._cut_after = n_bytes

    def _close_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counts: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
                if counts:
                    with self._lock:
                        self.bytes_back += len(data)
                        cut = self._cut_after is not None and self.bytes_back >= self._cut_after
                        if cut:
                            self._cut_after = None  # one cut: connections opened afterwards work
                    if cut:
                        self._close_all()
                        return
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.down()


class SlackReceiver:
    """A real HTTP server standing in for Slack's incoming webhook.

    `fail_when(predicate, status)` answers `status` to messages whose text the predicate accepts
    (the message is not posted); `hang_when(predicate, seconds)` waits before answering (and does
    not post it), as a webhook that times out would."""

    def __init__(self):
        self.messages: list[dict] = []  # posted (answered 200)
        self.refused: list[dict] = []  # answered with an error or hung
        self._rules: list[tuple] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                message = {"path": self.path, "body": body}
                for predicate, status, delay in list(receiver._rules):
                    if predicate(body.get("text", "")):
                        receiver.refused.append(message)
                        if delay:
                            time.sleep(delay)
                        self.send_response(status)
                        self.end_headers()
                        self.wfile.write(b"server_error")
                        return
                receiver.messages.append(message)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.secret = "T0SECRET/B0SECRET/webhooksecret"
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{self.secret}"

    def fail_when(self, predicate, status: int = 500) -> None:
        self._rules.append((predicate, status, 0))

    def hang_when(self, predicate, seconds: float) -> None:
        self._rules.append((predicate, 200, seconds))

    def heal(self) -> None:
        self._rules.clear()

    def texts(self) -> list[str]:
        return [m["body"].get("text", "") for m in self.messages]

    def close(self) -> None:
        self.server.shutdown()


class FullDisk(pafs.FileSystemHandler):
    """A local filesystem (pyarrow) that is full: writing a file whose path contains ``full_under``
    raises ENOSPC, as a filled disk does, once ``full`` is set. No privileges needed (a size-limited
    tmpfs needs root). Wrap it with ``pyarrow.fs.PyFileSystem(FullDisk(...))``."""

    def __init__(self, full_under: str = "/raw/"):
        self.local = pafs.LocalFileSystem()
        self.full_under = full_under
        self.full = True
        self.refused: list[str] = []

    def _writes_to_a_full_disk(self, path: str) -> bool:
        return self.full and self.full_under in path

    def open_output_stream(self, path, metadata):
        stream = self.local.open_output_stream(path)
        if not self._writes_to_a_full_disk(path):
            return stream
        import pyarrow as pa

        self.refused.append(path)
        return pa.PythonFile(_NoSpaceLeft(stream), mode="w")

    def open_append_stream(self, path, metadata):
        return self.open_output_stream(path, metadata)

    # Everything else: the local filesystem as it is.
    def get_type_name(self):
        return "full-disk"

    def equals(self, other):
        return other is self

    def normalize_path(self, path):
        return self.local.normalize_path(path)

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.local.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.local.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.local.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.local.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to empty the root")

    def delete_file(self, path):
        self.local.delete_file(path)

    def move(self, src, dest):
        self.local.move(src, dest)

    def copy_file(self, src, dest):
        self.local.copy_file(src, dest)

    def open_input_stream(self, path):
        return self.local.open_input_stream(path)

    def open_input_file(self, path):
        return self.local.open_input_file(path)


class _NoSpaceLeft:
    """A file on a full disk: the first write fails with ENOSPC."""

    def __init__(self, stream):
        self.stream = stream
        self.closed = False

    def write(self, data):
        import errno
        import os

        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self):
        self.closed = True
        self.stream.close()

    def flush(self):
        pass

    def tell(self):
        return 0

    def writable(self):
        return True
