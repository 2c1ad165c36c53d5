"""Socket listeners for the frame server: a Unix socket or loopback TCP, threads with a cap.

Each connection runs :func:`firmware_bridge.serve.server.serve_stream` on its own thread; at most
``max_connections`` are served at once and one more gets a ``BUSY`` reply and is closed. A
connection that sends nothing for ``timeout`` seconds, in or between frames, is closed. TCP
binds to loopback addresses unless remote access is asked for explicitly.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import socketserver
import stat
import threading
from pathlib import Path

from firmware_bridge.errors import EdgesegError
from firmware_bridge.serve import protocol as P
from firmware_bridge.serve.server import FrameHandler, serve_stream

LINGER_BYTES = 1 << 20
LINGER_SECONDS = 0.5


def linger_close(sock: socket.socket) -> None:
    """Half-close, then discard up to 1 MiB of unread input for up to 0.5 s.

    Closing a TCP socket with unread input sends a reset, which can destroy the error reply
    before the client reads it; draining a bounded amount first lets the reply arrive.
    """
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(LINGER_SECONDS)
        drained = 0
        while drained < LINGER_BYTES:
            chunk = sock.recv(65536)
            if not chunk:
                break
            drained += len(chunk)
    except OSError:
        pass


class _Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(self.server.frame_handler.options.timeout)
        with sock.makefile("rb") as rfile, sock.makefile("wb") as wfile:
            serve_stream(rfile, wfile, self.server.frame_handler)
        linger_close(sock)


class _Capped(socketserver.ThreadingMixIn):
    daemon_threads = True
    frame_handler: FrameHandler
    slots: threading.BoundedSemaphore

    def process_request(self, request, client_address) -> None:  # noqa: D102
        if not self.slots.acquire(blocking=False):
            try:  # answered on the accept thread: lingering holds it up for 0.5 s at most
                request.sendall(P.encode_error(P.STATUS_BUSY, 0, "server busy: too many "
                                               "connections, retry later"))
            except OSError:
                pass
            linger_close(request)
            self.close_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:  # noqa: D102
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


class UnixServer(_Capped, socketserver.UnixStreamServer):
    """Threaded Unix-socket server; removes its socket file on close."""

    def server_close(self) -> None:  # noqa: D102
        super().server_close()
        Path(self.server_address).unlink(missing_ok=True)


class TCPServer(_Capped, socketserver.TCPServer):
    """Threaded TCP server."""

    allow_reuse_address = True


class TCP6Server(TCPServer):
    """Threaded TCP server on IPv6."""

    address_family = socket.AF_INET6


def parse_tcp(address: str, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``, ``[::1]:PORT``) to ``(host, port)``; loopback unless allowed.

    Raises:
        EdgesegError: For a malformed address, a host name other than ``localhost``, or a
            non-loopback address without ``allow_remote``.
    """
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    host = "127.0.0.1" if host == "localhost" else host
    try:
        ip, num = ipaddress.ip_address(host), int(port)
    except ValueError as exc:
        raise EdgesegError(f"--tcp takes HOST:PORT with an IP address, e.g. 127.0.0.1:5555; "
                           f"got {address!r}") from exc
    if not 0 <= num <= 65535:
        raise EdgesegError(f"port must be 0-65535, got {num}")
    if not ip.is_loopback and not allow_remote:
        raise EdgesegError(f"{host} is not a loopback address: frames would be served to the "
                           "network unauthenticated; pass --allow-remote if that is intended")
    return host, num


def make_server(handler: FrameHandler, unix: str | Path | None = None,
                tcp: tuple[str, int] | None = None) -> socketserver.BaseServer:
    """A bound, listening server on a Unix socket path or a ``(host, port)`` (checked before).

    A stale socket file at ``unix`` is replaced; any other file there is an error.

    Raises:
        EdgesegError: When the address cannot be bound.
    """
    if (unix is None) == (tcp is None):
        raise EdgesegError("give exactly one of a Unix socket path or a TCP address")
    if unix is not None:
        path = Path(unix)
        if path.exists() or path.is_symlink():
            if not stat.S_ISSOCK(path.lstat().st_mode):
                raise EdgesegError(f"{path} exists and is not a socket; choose another path")
            path.unlink()
        cls, address = UnixServer, os.fspath(path)
    else:
        cls = TCP6Server if ":" in tcp[0] else TCPServer
        address = tcp
    try:
        server = cls(address, _Connection)
    except OSError as exc:
        raise EdgesegError(f"cannot listen on {address}: {exc}") from exc
    server.frame_handler = handler
    server.slots = threading.BoundedSemaphore(handler.options.max_connections)
    return server
