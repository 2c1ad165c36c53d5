"""Serve a segmentation model over the frame protocol: one stream's request/reply loop.

:func:`serve_stream` answers the requests of one stream (stdin/stdout, or a connection that
:mod:`firmware_bridge.serve.listeners` accepted); one request is answered before the next is read.
The model runs under a lock, one frame at a time. Memory per connection is bounded:
a payload buffer is allocated only after its header passed :func:`protocol.check_request`
against ``max_frame_bytes``, and the model's working memory grows with the frame's pixels,
which that limit also bounds.

When a header is bad (magic, version, fields, dtype, channels, size, length), the server
replies with the error status and closes the connection, since it can no longer tell where
the next frame starts; after ``OK``, ``REJECTED`` and ``INTERNAL_ERROR`` the connection stays
open. A stream that ends inside a frame gets a ``BAD_HEADER`` or ``LENGTH_MISMATCH`` reply
if the peer still reads, and is closed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.serve import protocol as P


class TiledModel(Protocol):
    """What the server needs of a model (:class:`~firmware_bridge.runtime.segmenter.Segmenter`)."""

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
