"""Real network parts for fault tests: a TCP proxy that can refuse or cut connections, and a Slack
webhook receiver that can fail or hang. Both are real servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


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
