"""A dataset server on 127.0.0.1 for the download tests: serves files, or fails on purpose.

The first part of the URL path says how the server behaves; the rest names a file of
``root``. ``/ok/<file>`` serves it as the OGBench server does (``Content-Length`` and all);
``/close/<file>`` announces the whole length, sends half and closes the connection;
``/nolength/<file>`` sends half without a length and closes (the end looks regular);
``/stall/<file>`` sends half and then waits, without closing, until :meth:`release`;
``/truncated/<file>`` serves the first 60 % as if it were the whole file; ``/html/<file>``
answers with an HTML page. A file not in ``root`` is a 404. ``HEAD`` gives the headers of
the ``GET``.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["DatasetServer"]

_HTML = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Sign in</body></html>\n"


class DatasetServer:
    """``with DatasetServer(root) as server: server.url("ok")`` is a dataset URL."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self._released = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, mode: str = "ok") -> str:
        """The dataset URL (``DATASET_URL``) of one behaviour."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/{mode}"

    def gets(self) -> list[str]:
        """The paths of the ``GET`` requests so far."""
        return [path for method, path in self.requests if method == "GET"]

    def release(self) -> None:
        """Let the stalled transfers end."""
        self._released.set()

    def __enter__(self) -> DatasetServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                server.requests.append((self.command, self.path))
                _, mode, name = (self.path.split("/", 2) + ["", ""])[:3]
                path = server.root / name
                if not name or "/" in name or not path.is_file():
                    self.send_error(404, "Not Found")
                    return
                data = _HTML if mode == "html" else path.read_bytes()
                if mode == "truncated":
                    data = data[: int(len(data) * 0.6)]
                self.send_response(200)
                kind = "text/html" if mode == "html" else "application/zip"
                self.send_header("Content-Type", kind)
                if mode != "nolength":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if not body:
                    return
                if mode in ("close", "nolength", "stall"):
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if mode == "stall":
                        server._released.wait(120)
                    self.close_connection = True
                    return
                self.wfile.write(data)

        return Handler
