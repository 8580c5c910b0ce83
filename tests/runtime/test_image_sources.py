"""Where an image route reads an image from, against servers and files that misbehave: a fetch
(``fetch_urls=True``) is bounded as a whole, not per socket read; a redirect leaves http(s) for
nothing else; a local path swapped for a FIFO is refused without waiting for a writer. No model:
the image pipeline alone, with a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from packager.runtime import InvalidInputError, image_fetch, image_inputs
from packager.runtime.image_inputs import ImagePipeline
from packager.runtime.routes import ImageSpec

DEADLINE_S = 1.0  # the fetch deadline these tests run under (the loader's is 10 s)
HANG_S = 20.0  # what counts as a hang: far above the deadline, far below what a trickle takes


def _png() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), (200, 30, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()


class _Server(BaseHTTPRequestHandler):
    """``/ok.png``; ``/trickle-body.png`` and ``/trickle-headers.png``, a byte every 0.1 s (a
    fetch of either, read by read, never times out); ``/to/<url>``, a redirect to ``<url>``."""

    ended = threading.Event()  # a trickle's connection was cut by the client

    def do_GET(self) -> None:
        if self.path == "/ok.png":
            self._send(200, {"Content-Type": "image/png", "Content-Length": str(len(PNG))}, PNG)
        elif self.path.startswith("/to/"):
            self._send(302, {"Location": self.path[len("/to/"):], "Content-Length": "0"}, b"")
        elif self.path.startswith("/trickle-"):
            self._trickle(self.path == "/trickle-headers.png")
        else:
            self._send(404, {"Content-Length": "0"}, b"")

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, headers: bool) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n"
        body = PNG * 50
        data = head + b"X-Slow: " + b"x" * 600 + b"\r\n" if headers else \
            head + f"Content-Length: {len(body)}\r\n\r\n".encode() + body
        try:
            for i in range(len(data)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.1)
        except OSError:
            _Server.ended.set()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server(monkeypatch) -> Iterator[str]:
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(image_fetch, "_URL_TIMEOUT_S", DEADLINE_S)
    _Server.ended.clear()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def pipeline() -> ImagePipeline:
    return ImagePipeline(ImageSpec(convert_rgb=True, shortest_edge=None, size=(4, 4), resample=3, crop=None,
                                   rescale=1 / 255, mean=None, std=None))


def _within_hang_limit(call):
    """``call()``'s result or exception, from a thread that must end well before HANG_S."""
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except Exception as e:  # what the test checks
            outcome["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_S)
    assert not thread.is_alive(), f"still running after {HANG_S} s"
    return outcome


def test_a_fetched_image_is_decoded(server, pipeline):
    assert pipeline.one(f"{server}/ok.png", fetch_urls=True).shape == (3, 4, 4)
    assert pipeline.one(f"{server}/to/{server}/ok.png", fetch_urls=True).shape == (3, 4, 4)  # http(s) redirects
    with pytest.raises(InvalidInputError, match=r"item 0: fetching .* failed: HTTP Error 404"):
        pipeline.one(f"{server}/missing.png", fetch_urls=True)


@pytest.mark.parametrize("where", ["body", "headers"])
def test_a_trickling_server_is_cut_off_at_the_deadline_of_the_whole_fetch(where, server, pipeline):
    """A byte every 0.1 s never lets one read time out: the deadline is the whole fetch's, and its
    connection is closed when it passes (the server sees it go)."""
    outcome = _within_hang_limit(lambda: pipeline.one(f"{server}/trickle-{where}.png", fetch_urls=True))
    assert isinstance(outcome.get("error"), InvalidInputError), outcome
    assert f"took longer than {DEADLINE_S} s" in str(outcome["error"])
    assert _Server.ended.wait(HANG_S), "the trickling connection was left open"


@pytest.fixture
def listener() -> Iterator[tuple[int, threading.Event]]:
    """A TCP port that records whether anything connected to it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    contacted, stop = threading.Event(), threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                sock.accept()[0].close()
                contacted.set()
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], contacted
    stop.set()
    thread.join()
    sock.close()


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:{port}/x.png", "FTP://127.0.0.1:{port}/x.png",
                                    "gopher://127.0.0.1:{port}/x.png", "file:///etc/hostname",
                                    "data:image/png;base64,AAAA", "telnet://127.0.0.1:{port}/"])
def test_a_redirect_to_anything_but_http_is_refused_and_never_followed(target, server, listener, pipeline):
    port, contacted = listener
    url = f"{server}/to/{target.format(port=port)}"
    with pytest.raises(InvalidInputError, match=r"fetching .* failed: .*redirect|fetching .* failed: .*not allowed"):
        pipeline.one(url, fetch_urls=True)
    time.sleep(0.3)  # a connection the client opened would have been accepted by now
    assert not contacted.is_set(), "the redirect's target was contacted"


def test_a_path_swapped_for_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path, pipeline):
    """The path was a file when the input was classified (``is_image``); by the time it is read
    it is a FIFO with no writer, which a blocking open would wait on forever."""
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    assert image_inputs.is_image(str(path))
    assert pipeline.one(str(path)).shape == (3, 4, 4)
    path.unlink()
    os.mkfifo(path)
    outcome = _within_hang_limit(lambda: pipeline.one(str(path), 2))
    assert isinstance(outcome.get("error"), InvalidInputError), outcome
    assert "item 2" in str(outcome["error"]) and "not a regular file" in str(outcome["error"])


def test_a_path_to_a_directory_or_device_is_refused(tmp_path, pipeline):
    (tmp_path / "folder.png").mkdir()
    for path in (tmp_path / "folder.png", "/dev/zero"):
        with pytest.raises(InvalidInputError, match="not a regular file"):
            pipeline.one(str(path))
    link = tmp_path / "link.png"  # a link to an image is followed, as the reference's Image.open follows it
    (tmp_path / "real.png").write_bytes(PNG)
    link.symlink_to(tmp_path / "real.png")
    assert pipeline.one(str(link)).shape == (3, 4, 4)


TRICKY_URLS = ["http://host/a.png", "https://host/a.PNG?size=2#top", "http://host.png", "http://host?x=a.png",
               "http://host/#a.png", "http://host/a.png;v=1", "http://host/a;v=1/b.jpg", "http://host/a.p\tng",
               "http://host/dir.png/", "http://[::1/a.png", "http://user@host:8080/a/b.webp", "https://h/a.png%20"]


@pytest.mark.parametrize("url", TRICKY_URLS)
def test_a_url_is_classified_by_the_path_urlparse_finds(url):
    from urllib.parse import urlparse

    try:
        want = urlparse(url).path.lower().endswith(image_inputs.IMAGE_SUFFIXES)
    except ValueError:
        want = False
    assert image_inputs.is_image(url) is want


def test_classifying_long_urls_keeps_none_of_them():
    """urllib's urlsplit keeps its last 128 inputs: megabyte URLs that callers send to be
    classified (image or text) must not stay in memory after the call."""
    import gc
    import tracemalloc

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(40):
            assert image_inputs.is_image(f"http://host/{i}/{'a' * 1_000_000}.png")
        gc.collect()
        kept = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kept < 4_000_000, f"{kept} bytes kept after classifying 40 MB of URLs"


def test_a_url_too_long_to_fetch_is_refused_before_any_connection(pipeline, listener, monkeypatch):
    port, contacted = listener
    with pytest.raises(InvalidInputError, match="longer than 8192"):
        pipeline.one(f"http://127.0.0.1:{port}/{'a' * 9000}.png", fetch_urls=True)
    assert not contacted.is_set()
