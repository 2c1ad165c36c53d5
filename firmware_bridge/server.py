"""Serve a segmentation model over the frame protocol (stdin/stdout, Unix socket, loopback TCP).

One request is answered before the next is read. The model runs under a lock, one frame at a
time; several connections (at most ``max_connections``, each on its own thread) may be open
at once, and one more gets a ``BUSY`` reply and is closed. Memory per connection is bounded:
a payload buffer is allocated only after its header passed :func:`protocol.check_request`
against ``max_frame_bytes``, and the model's working memory grows with the frame's pixels,
which that limit also bounds. A connection that sends nothing for ``timeout`` seconds, in
or between frames, is closed.

When a header is bad (magic, version, fields, dtype, channels, size, length), the server
replies with the error status and closes the connection, since it can no longer tell where
the next frame starts; after ``OK``, ``REJECTED`` and ``INTERNAL_ERROR`` the connection stays
open. A stream that ends inside a frame gets a ``BAD_HEADER`` or ``LENGTH_MISMATCH`` reply
if the peer still reads, and is closed.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import socketserver
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from firmware_bridge import protocol as P
from firmware_bridge.errors import EdgesegError


class TiledModel(Protocol):
    """What the server needs of a model (:class:`~firmware_bridge.segmenter.Segmenter`)."""

    num_classes: int

    def predict_tiled(self, image: np.ndarray):  # -> object with ``.mask`` HxW uint8
        """Predict an image of any size."""


@dataclass(frozen=True)
class ServerOptions:
    """Limits of a server.

    Attributes:
        max_frame_bytes: Largest request payload accepted (bytes of pixels).
        timeout: Seconds a connection may stay silent before it is closed (``None``: never).
        max_connections: Connections served at once; one more gets ``BUSY``.
        channels: Channel counts the model takes (``None``: any of 1-4).
    """

    max_frame_bytes: int = P.DEFAULT_MAX_FRAME_BYTES
    timeout: float | None = 30.0
    max_connections: int = 4
    channels: tuple[int, ...] | None = None


class FrameHandler:
    """Turns one checked request into one reply with a model; thread-safe."""

    def __init__(self, model: TiledModel, options: ServerOptions | None = None) -> None:
        self.model, self.options = model, options or ServerOptions()
        chans = getattr(model, "channels", None)
        self.channels = self.options.channels or ((int(chans),) if chans else (1, 2, 3, 4))
        self._lock = threading.Lock()

    def check(self, header: P.RequestHeader) -> None:
        """Validate a header against the limits (raises :class:`protocol.ProtocolError`)."""
        P.check_request(header, self.options.max_frame_bytes, self.channels)

    def reply(self, header: P.RequestHeader, payload: bytearray) -> bytes:
        """Run the model on a checked frame; the encoded reply (``OK`` or an error)."""
        image = P.decode_pixels(header, payload)
        try:
            with self._lock:
                start = time.perf_counter_ns()
                mask = np.asarray(self.model.predict_tiled(image).mask, dtype=np.uint8)
                elapsed_us = (time.perf_counter_ns() - start) // 1000
        except EdgesegError as exc:
            return P.encode_error(P.STATUS_REJECTED, header.frame_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - reported to the client, server keeps going
            return P.encode_error(P.STATUS_INTERNAL_ERROR, header.frame_id,
                                  f"{type(exc).__name__}: {exc}")
        fractions = P.class_fractions(mask, self.model.num_classes)
        keep = None if header.flags & P.FLAG_NO_MASK else mask
        return P.encode_reply(header.frame_id, keep, fractions, elapsed_us)


def read_exact(rfile: BinaryIO, buf: bytearray | memoryview) -> int:
    """Fill ``buf`` from ``rfile``; the bytes read (fewer only when the stream ended)."""
    view, got = memoryview(buf), 0
    while got < len(view):
        n = rfile.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def serve_stream(rfile: BinaryIO, wfile: BinaryIO, handler: FrameHandler) -> int:
    """Answer requests from one stream until it ends or breaks the protocol.

    Args:
        rfile: Binary input (a socket's ``makefile("rb")``, ``stdin.buffer``).
        wfile: Binary output; flushed after every reply.
        handler: The model and its limits.

    Returns:
        Frames answered with ``OK``.
    """
    served = 0

    def send(data: bytes) -> bool:
        try:
            wfile.write(data)
            wfile.flush()
            return True
        except (OSError, ValueError):  # peer gone, or stream closed under us
            return False

    try:
        while True:
            head = bytearray(P.REQUEST_SIZE)
            got = read_exact(rfile, head)
            if got == 0:
                return served
            if got < P.REQUEST_SIZE:
                send(P.encode_error(P.STATUS_BAD_HEADER, 0, f"stream ended after {got} of "
                                    f"{P.REQUEST_SIZE} header bytes"))
                return served
            header = P.decode_request_header(bytes(head))
            try:
                handler.check(header)
            except P.ProtocolError as exc:
                send(P.encode_error(exc.status, exc.frame_id, str(exc)))
                return served
            payload = bytearray(header.payload_length)  # checked against the limit above
            got = read_exact(rfile, payload)
            if got < len(payload):
                send(P.encode_error(P.STATUS_LENGTH_MISMATCH, header.frame_id, f"stream ended "
                                    f"after {got} of {len(payload)} payload bytes"))
                return served
            out = handler.reply(header, payload)
            if not send(out):
                return served
            served += P.REPLY_STRUCT.unpack_from(out)[2] == P.STATUS_OK
    except (OSError, ValueError):  # timeout, reset, or a closed stream
        return served


class _Connection(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.settimeout(self.server.frame_handler.options.timeout)
        with sock.makefile("rb") as rfile, sock.makefile("wb") as wfile:
            serve_stream(rfile, wfile, self.server.frame_handler)


class _Capped(socketserver.ThreadingMixIn):
    daemon_threads = True
    frame_handler: FrameHandler
    slots: threading.BoundedSemaphore

    def process_request(self, request, client_address) -> None:  # noqa: D102
        if not self.slots.acquire(blocking=False):
            try:
                request.sendall(P.encode_error(P.STATUS_BUSY, 0, "server busy: too many "
                                               "connections, retry later"))
            except OSError:
                pass
            self.shutdown_request(request)
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
