"""The frame protocol between a flight computer's program and ``edgeseg-run serve``.

Pure encode/decode functions over fixed little-endian headers (``docs/protocol.md`` is the
specification, ``firmware_bridge/serve/c/edgeseg_protocol.h`` declares the same layout in C):

* request: a 32-byte :class:`RequestHeader`, then ``height * width * channels`` pixels of the
  header's dtype, row-major, channels interleaved (HWC);
* reply: a 40-byte :class:`ReplyHeader`, then, for status ``OK``, the ``height * width`` uint8
  class mask followed by ``num_classes`` float32 pixel fractions; for an error status, a short
  UTF-8 message saying what was wrong.

Every field is checked before anything is allocated from it: a reader first validates the
header (:func:`check_request`) and only then reads exactly ``payload_length`` bytes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import numpy as np

VERSION = 1
REQUEST_MAGIC = b"ESRQ"
REPLY_MAGIC = b"ESRP"
REQUEST_FORMAT = "<4sHHIIIHHQ"  # magic version flags frame_id height width channels dtype length
REPLY_FORMAT = "<4sHHIIIHHQQ"  # magic version status frame_id height width classes rsv us length
REQUEST_STRUCT = struct.Struct(REQUEST_FORMAT)
REPLY_STRUCT = struct.Struct(REPLY_FORMAT)
REQUEST_SIZE = REQUEST_STRUCT.size  # 32
REPLY_SIZE = REPLY_STRUCT.size  # 40
REQUEST_FIELDS = ("magic", "version", "flags", "frame_id", "height", "width", "channels",
                  "dtype", "payload_length")
REPLY_FIELDS = ("magic", "version", "status", "frame_id", "height", "width", "num_classes",
                "reserved", "inference_us", "payload_length")

# dtype codes of the request's pixels
DTYPE_UINT8 = 1
DTYPE_UINT16 = 2
DTYPE_FLOAT32 = 3
DTYPES: dict[int, np.dtype] = {DTYPE_UINT8: np.dtype("<u1"), DTYPE_UINT16: np.dtype("<u2"),
                               DTYPE_FLOAT32: np.dtype("<f4")}

# request flags
FLAG_NO_MASK = 0x0001
"""Reply with the class fractions only (``height = width = 0``, no mask bytes)."""
KNOWN_FLAGS = FLAG_NO_MASK

# reply status codes
STATUS_OK = 0
STATUS_BAD_MAGIC = 1
STATUS_BAD_VERSION = 2
STATUS_BAD_HEADER = 3
STATUS_LENGTH_MISMATCH = 4
STATUS_TOO_LARGE = 5
STATUS_UNSUPPORTED_DTYPE = 6
STATUS_UNSUPPORTED_CHANNELS = 7
STATUS_INTERNAL_ERROR = 8
STATUS_BUSY = 9
STATUS_REJECTED = 10
STATUS_NAMES = {STATUS_OK: "ok", STATUS_BAD_MAGIC: "bad_magic", STATUS_BAD_VERSION: "bad_version",
                STATUS_BAD_HEADER: "bad_header", STATUS_LENGTH_MISMATCH: "length_mismatch",
                STATUS_TOO_LARGE: "too_large", STATUS_UNSUPPORTED_DTYPE: "unsupported_dtype",
                STATUS_UNSUPPORTED_CHANNELS: "unsupported_channels",
                STATUS_INTERNAL_ERROR: "internal_error", STATUS_BUSY: "busy", STATUS_REJECTED: "rejected"}
KEEP_OPEN = frozenset({STATUS_OK, STATUS_INTERNAL_ERROR, STATUS_REJECTED})
"""After a reply with one of these the stream is in step and the connection stays open."""

MAX_MESSAGE = 512
DEFAULT_MAX_FRAME_BYTES = 4096 * 4096 * 3


class ProtocolError(ValueError):
    """A frame that breaks the protocol; ``status`` is the reply code that reports it."""

    def __init__(self, status: int, message: str, frame_id: int = 0) -> None:
        super().__init__(message)
        self.status, self.frame_id = status, frame_id


@dataclass(frozen=True)
class RequestHeader:
    """The 32-byte request header (see ``docs/protocol.md``)."""

    frame_id: int
    height: int
    width: int
    channels: int
    dtype: int
    payload_length: int
    flags: int = 0
    version: int = VERSION
    magic: bytes = REQUEST_MAGIC


@dataclass(frozen=True)
class ReplyHeader:
    """The 40-byte reply header (see ``docs/protocol.md``)."""

    status: int
    frame_id: int
    height: int
    width: int
    num_classes: int
    inference_us: int
    payload_length: int
    version: int = VERSION
    magic: bytes = REPLY_MAGIC
    reserved: int = 0


@dataclass(frozen=True)
class Reply:
    """A decoded reply: header plus mask and fractions (``OK``) or an error message."""

    header: ReplyHeader
    mask: np.ndarray | None = None
    fractions: np.ndarray | None = None
    message: str = ""


def field_layout(fmt: str, names: tuple[str, ...]) -> list[tuple[str, int, int]]:
    """``(name, offset, size)`` of every field of a little-endian ``struct`` format."""
    codes = re.findall(r"\d*[a-zA-Z?]", fmt.lstrip("<"))
    out, offset = [], 0
    for name, code in zip(names, codes, strict=True):
        size = struct.calcsize("<" + code)
        out.append((name, offset, size))
        offset += size
    return out


def encode_request_header(h: RequestHeader) -> bytes:
    """Pack a request header (values are not checked: tests use this to forge bad frames)."""
    return REQUEST_STRUCT.pack(h.magic, h.version, h.flags, h.frame_id, h.height, h.width,
                               h.channels, h.dtype, h.payload_length)


def decode_request_header(data: bytes) -> RequestHeader:
    """Unpack exactly :data:`REQUEST_SIZE` bytes (no checks; see :func:`check_request`).

    Raises:
        ProtocolError: ``BAD_HEADER`` when ``data`` is not 32 bytes long.
    """
    if len(data) != REQUEST_SIZE:
        raise ProtocolError(STATUS_BAD_HEADER, f"request header is {REQUEST_SIZE} bytes, "
                            f"got {len(data)}")
    magic, version, flags, fid, h, w, c, dt, n = REQUEST_STRUCT.unpack(data)
    return RequestHeader(fid, h, w, c, dt, n, flags, version, magic)


def frame_nbytes(height: int, width: int, channels: int, dtype: int) -> int:
    """Bytes of pixel data a request with these dimensions must carry."""
    return height * width * channels * DTYPES[dtype].itemsize


def check_request(h: RequestHeader, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
                  channels: tuple[int, ...] = (1, 2, 3, 4)) -> None:
    """Validate a request header before any payload is read or allocated.

    Args:
        h: The decoded header.
        max_frame_bytes: Largest payload the server accepts.
        channels: Channel counts the model can take.

    Raises:
        ProtocolError: With the status code that reports the first problem found, in the
            order magic, version, header fields, dtype, channels, size, length.
    """
    fid = h.frame_id
    if h.magic != REQUEST_MAGIC:
        raise ProtocolError(STATUS_BAD_MAGIC, f"magic must be {REQUEST_MAGIC!r}, got {h.magic!r}")
    if h.version != VERSION:
        raise ProtocolError(STATUS_BAD_VERSION, f"protocol version {h.version} is not "
                            f"supported; this server speaks version {VERSION}", fid)
    if h.flags & ~KNOWN_FLAGS:
        raise ProtocolError(STATUS_BAD_HEADER, f"unknown flag bits 0x{h.flags & ~KNOWN_FLAGS:04x}"
                            " (reserved bits must be 0)", fid)
    if h.height == 0 or h.width == 0 or h.channels == 0:
        raise ProtocolError(STATUS_BAD_HEADER, f"empty frame {h.height}x{h.width}x{h.channels}",
                            fid)
    if h.dtype not in DTYPES:
        raise ProtocolError(STATUS_UNSUPPORTED_DTYPE, f"dtype code {h.dtype} is unknown; use "
                            f"one of {sorted(DTYPES)}", fid)
    if h.channels not in channels:
        raise ProtocolError(STATUS_UNSUPPORTED_CHANNELS, f"{h.channels} channels; the model "
                            f"takes {', '.join(map(str, channels))}", fid)
    expected = frame_nbytes(h.height, h.width, h.channels, h.dtype)
    if max(expected, h.payload_length) > max_frame_bytes:
        raise ProtocolError(STATUS_TOO_LARGE, f"frame of {max(expected, h.payload_length)} bytes"
                            f" is over the server's limit of {max_frame_bytes}", fid)
    if h.payload_length != expected:
        raise ProtocolError(STATUS_LENGTH_MISMATCH, f"payload_length {h.payload_length} but "
                            f"{h.height}x{h.width}x{h.channels} pixels need {expected} bytes", fid)


def encode_request(frame_id: int, image: np.ndarray, flags: int = 0) -> bytes:
    """Header plus pixels for an ``HxW`` or ``HxWxC`` uint8/uint16/float32 image.

    Raises:
        ValueError: For another dtype or rank.
    """
    if image.ndim == 2:
        image = image[..., None]
    codes = {v: k for k, v in DTYPES.items()}
    dt = np.dtype(image.dtype).newbyteorder("<")
    if image.ndim != 3 or dt not in codes:
        raise ValueError(f"need an HxWxC uint8/uint16/float32 image, got {image.dtype} "
                         f"{image.shape}")
    payload = np.ascontiguousarray(image, dtype=dt).tobytes()
    h, w, c = image.shape
    return encode_request_header(RequestHeader(frame_id, h, w, c, codes[dt], len(payload),
                                               flags)) + payload


def decode_pixels(h: RequestHeader, payload: bytes | bytearray | memoryview) -> np.ndarray:
    """The ``HxWxC`` image of a checked request (a view on ``payload``, no copy)."""
    return np.frombuffer(payload, dtype=DTYPES[h.dtype]).reshape(h.height, h.width, h.channels)


def encode_reply_header(h: ReplyHeader) -> bytes:
    """Pack a reply header."""
    return REPLY_STRUCT.pack(h.magic, h.version, h.status, h.frame_id, h.height, h.width,
                             h.num_classes, h.reserved, h.inference_us, h.payload_length)


def decode_reply_header(data: bytes) -> ReplyHeader:
    """Unpack exactly :data:`REPLY_SIZE` bytes and check magic and version.

    Raises:
        ProtocolError: For a wrong size, magic or version.
    """
    if len(data) != REPLY_SIZE:
        raise ProtocolError(STATUS_BAD_HEADER, f"reply header is {REPLY_SIZE} bytes, got "
                            f"{len(data)}")
    magic, ver, status, fid, h, w, k, rsv, us, n = REPLY_STRUCT.unpack(data)
    if magic != REPLY_MAGIC:
        raise ProtocolError(STATUS_BAD_MAGIC, f"reply magic must be {REPLY_MAGIC!r}, got {magic!r}")
    if ver != VERSION:
        raise ProtocolError(STATUS_BAD_VERSION, f"reply version {ver}, expected {VERSION}", fid)
    return ReplyHeader(status, fid, h, w, k, us, n, ver, magic, rsv)


def encode_reply(frame_id: int, mask: np.ndarray | None, fractions: np.ndarray,
                 inference_us: int) -> bytes:
    """An ``OK`` reply: header, ``HxW`` uint8 mask (``None``: no mask), float32 fractions."""
    k = len(fractions)
    frac = np.asarray(fractions, dtype="<f4").tobytes()
    body = b"" if mask is None else np.ascontiguousarray(mask, dtype=np.uint8).tobytes()
    h, w = (0, 0) if mask is None else mask.shape
    head = ReplyHeader(STATUS_OK, frame_id, h, w, k, inference_us, len(body) + len(frac))
    return encode_reply_header(head) + body + frac


def encode_error(status: int, frame_id: int, message: str) -> bytes:
    """An error reply whose payload is the UTF-8 ``message`` (cut to :data:`MAX_MESSAGE`)."""
    text = message.encode("utf-8", "replace")[:MAX_MESSAGE]
    return encode_reply_header(ReplyHeader(status, frame_id, 0, 0, 0, 0, len(text))) + text


def decode_reply(header: ReplyHeader, payload: bytes) -> Reply:
    """Split a reply payload into mask and fractions (or the error message).

    Raises:
        ProtocolError: ``LENGTH_MISMATCH`` when the payload does not fit the header.
    """
    if header.status != STATUS_OK:
        return Reply(header, message=payload.decode("utf-8", "replace"))
    npix, k = header.height * header.width, header.num_classes
    if len(payload) != header.payload_length or header.payload_length != npix + 4 * k:
        raise ProtocolError(STATUS_LENGTH_MISMATCH, f"reply payload of {len(payload)} bytes "
                            f"does not hold a {header.height}x{header.width} mask and {k} "
                            "fractions", header.frame_id)
    mask = np.frombuffer(payload[:npix], np.uint8).reshape(header.height, header.width)
    fractions = np.frombuffer(payload[npix:], "<f4").astype(np.float32)
    return Reply(header, None if npix == 0 else mask, fractions)


def class_fractions(mask: np.ndarray, num_classes: int) -> np.ndarray:
    """Fraction of the mask's pixels in each class (``float32``).

    Pixels without data (255) are in no class: the fractions then sum to less than 1, and
    ``1 - sum`` is the share of the frame without data.
    """
    counts = np.bincount(mask.ravel(), minlength=num_classes)[:num_classes]
    return (counts / max(mask.size, 1)).astype(np.float32)
