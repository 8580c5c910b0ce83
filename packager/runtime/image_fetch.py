"""Fetching an image URL, for a caller who opted in (``fetch_urls=True``): http(s) only, redirects
to http(s) only, the whole fetch within a deadline and a size limit, its sockets shut from the
calling thread when the deadline passes. A service that fetches whatever URL it is sent can be
made to reach hosts it should not (server-side request forgery), so nothing here runs unasked.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import urlparse, urlsplit

from .errors import InvalidInputError

_URL_TIMEOUT_S = 10
URL_LIMIT = 8192  # characters of a URL to fetch (web servers refuse request lines past about 8 kB)


def url_path(url: str) -> str:
    """``urlparse(url).path``, without urllib's cache: ``urlsplit`` keeps its last 128 inputs
    (Python 3.11+), and a caller's URL may be megabytes long."""
    split = getattr(urlsplit, "__wrapped__", urlsplit)  # the function under functools.lru_cache
    path: str = split(url).path
    if ";" in path:  # urlparse's own step after urlsplit: ;parameters of the last segment
        cut = path.find(";", path.rfind("/")) if "/" in path else path.find(";")
        path = path if cut < 0 else path[:cut]
    return path


def is_url(text: str) -> bool:
    return text.startswith(("http://", "https://")) and " " not in text


def fetch(url: str, where: str, *, limit: int) -> bytes:
    """An image URL's bytes, at most ``limit``, within _URL_TIMEOUT_S for the whole fetch (the
    caller opted in). The fetch runs in a thread of its own: a server that trickles its headers
    or body a byte at a time never lets a socket read time out, so the calling thread waits for
    the deadline instead and then shuts the fetch's sockets, which ends the thread too (only a
    name lookup, which nothing can interrupt, outlives the deadline, by the resolver's timeout).
    Redirects go to http(s) URLs only, at most 10 of them, as urllib counts them."""
    if len(url) > URL_LIMIT:  # urllib keeps the last 128 URLs it parsed (redirects): each bounded
        raise InvalidInputError(f"{where}: an image URL of {len(url)} characters is longer than {URL_LIMIT}; "
                                "servers refuse such URLs anyway")
    fetch = _Fetch(limit)
    worker = threading.Thread(target=fetch.run, args=(url,), name="packager-image-fetch", daemon=True)
    worker.start()
    worker.join(_URL_TIMEOUT_S)
    if worker.is_alive():
        fetch.cancel()
        raise InvalidInputError(f"{where}: fetching {url[:100]!r} took longer than {_URL_TIMEOUT_S} s; "
                                "the whole fetch (connection, redirects, headers and body) must take less")
    if fetch.error is not None:
        raise InvalidInputError(f"{where}: fetching {url[:100]!r} failed: {fetch.error}")
    if len(fetch.data) > limit:
        raise InvalidInputError(f"{where}: {url[:100]!r} is larger than {limit >> 20} MiB")
    return fetch.data


class _Fetch:
    """One URL fetch and every socket it opened, so that another thread can cut it off."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = b""
        self.error: str | None = None
        self._sockets: list[socket.socket] = []
        self._cancelled = False
        self._lock = threading.Lock()

    def run(self, url: str) -> None:
        try:
            with self._opener().open(url, timeout=_URL_TIMEOUT_S) as response:
                self.data = response.read(self.limit + 1)
        except (URLError, OSError, ValueError, http.client.HTTPException) as e:
            self.error = str(e)[:300] or type(e).__name__
        except Exception as e:  # anything else urllib raises: the caller's error, not this thread's traceback
            self.error = f"{type(e).__name__}: {str(e)[:300]}"

    def cancel(self) -> None:
        with self._lock:
            self._cancelled = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _connected(self, *args: Any, **kwargs: Any) -> socket.socket:
        """``socket.create_connection``, the socket remembered (and shut at once if too late)."""
        sock = socket.create_connection(*args, **kwargs)
        with self._lock:
            self._sockets.append(sock)
            cancelled = self._cancelled
        if cancelled:
            _shut(sock)
        return sock

    def _opener(self) -> Any:
        """urllib with http(s) and nothing else (no ftp:, file: or data: handler to reach), the
        environment's proxies honoured, every connection's socket tracked."""
        import urllib.request as request

        fetch = self

        class Redirects(request.HTTPRedirectHandler):
            def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any,
                                 newurl: str) -> Any:
                if urlparse(newurl).scheme.lower() not in ("http", "https"):
                    raise HTTPError(newurl, code, f"a redirect to {newurl[:100]!r} was refused: images are "
                                            "fetched from http(s) URLs only", headers, fp)
                return super().redirect_request(req, fp, code, msg, headers, newurl)

        def tracked(connection: Any) -> Any:
            class Tracked(connection):  # type: ignore[misc]  # the handler's connection class, HTTP or HTTPS
                def __init__(self, *args: Any, **kwargs: Any) -> None:
                    super().__init__(*args, **kwargs)
                    self._create_connection = fetch._connected  # http.client's hook for opening its socket

            return Tracked

        class Tracking:
            def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
                return super().do_open(tracked(http_class), req, **kwargs)  # type: ignore[misc]

        class Http(Tracking, request.HTTPHandler):
            pass

        class Https(Tracking, request.HTTPSHandler):
            pass

        opener = request.OpenerDirector()
        for handler in (request.ProxyHandler(), Http(), Https(), request.HTTPDefaultErrorHandler(), Redirects(),
                        request.HTTPErrorProcessor()):
            opener.add_handler(handler)
        return opener


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
