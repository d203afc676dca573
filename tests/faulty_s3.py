"""An HTTP proxy in front of moto's S3 server that breaks things on cue, on 127.0.0.1.

S3 clients use :attr:`FaultyS3Proxy.endpoint`; each request is forwarded to moto, except:

* ``break_bodies={"bucket/key": n}``: the next ``n`` reads of that object send the headers
  of the whole object, then half its body, then close the connection (a download that
  breaks off mid-stream, as a reset connection does);
* ``reads_before_death=k``: after ``k`` object reads the proxy stops listening (connection
  refused from then on), as a store that goes away in the middle of a run, at an exact point.

``object_reads`` lists the ``bucket/key`` of every object read served (broken ones too),
in order. Listing and HEAD requests are forwarded untouched and not counted.
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "server", "date"}


class FaultyS3Proxy:
    def __init__(self, upstream_endpoint: str, *, break_bodies: dict[str, int] | None = None,
                 reads_before_death: int | None = None):
        upstream = urlsplit(upstream_endpoint)
        self.upstream = (upstream.hostname, upstream.port)
        self.break_bodies = dict(break_bodies or {})
        self.reads_before_death = reads_before_death
        self.object_reads: list[str] = []
        self.dead = False
        self._lock = threading.Lock()
        self._stop_lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FaultyS3Proxy":
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._stop_lock:  # the proxy's own death and the test's teardown may both call it
            if self._thread is not None:
                self._server.shutdown()
                self._thread.join(timeout=10)
                self._thread = None
            self._server.server_close()

    def __enter__(self) -> "FaultyS3Proxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _decide(self, method: str, path: str) -> str:
        """``"forward"``, ``"break"`` or ``"drop"`` (the store is gone) for one request."""
        parts = urlsplit(path)
        bucket, _, key = unquote(parts.path).lstrip("/").partition("/")
        is_read = method == "GET" and key and not parts.query
        with self._lock:
            if self.dead:
                return "drop"
            if not is_read:
                return "forward"
            if self.reads_before_death is not None and len(self.object_reads) >= self.reads_before_death:
                self.dead = True
                # stop listening from another thread (shutdown waits for serve_forever)
                threading.Thread(target=self.stop, daemon=True).start()
                return "drop"
            name = f"{bucket}/{key}"
            self.object_reads.append(name)
            if self.break_bodies.get(name, 0) > 0:
                self.break_bodies[name] -= 1
                return "break"
            return "forward"


def _handler_for(proxy: FaultyS3Proxy):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            action = proxy._decide(self.command, self.path)
            if action == "drop":
                self.close_connection = True
                return
            upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "keep-alive")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                declared = response.getheader("Content-Length")
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP:
                        self.send_header(name, value)
                # HEAD: the object's length, no body; otherwise the length of the whole body
                self.send_header("Content-Length", declared if self.command == "HEAD" else str(len(data)))
                if action == "break":
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if action == "break":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.wfile.write(data)
            finally:
                upstream.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _serve

    return Handler
