"""``edgeseg-run serve``: round trips, error replies, fuzzing, the C client, stdio and TCP."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tiny_models
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime.segmenter import Segmenter
from firmware_bridge.serve import protocol as P
from firmware_bridge.serve.listeners import make_server, parse_tcp
from firmware_bridge.serve.server import FrameHandler, ServerOptions

REPO = Path(__file__).resolve().parents[1]
RUN = [sys.executable, "-m", "firmware_bridge.cli"]
CLIENT_C = REPO / "firmware_bridge" / "serve" / "c" / "client.c"
LIMIT = 256 * 1024  # the fuzzed server's --max-frame-mb 0.25


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_models.build_onnx(tmp_path_factory.mktemp("serve_models"))["nchw"]


@pytest.fixture(scope="module")
def seg(model_path) -> Segmenter:
    return Segmenter(model_path)


def image(h: int, w: int, seed: int = 0, dtype=np.uint8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(dtype)


def parse_replies(data: bytes) -> list[P.Reply]:
    """Every reply in a byte stream; fails on a stream that is not whole replies."""
    replies = []
    while data:
        header = P.decode_reply_header(data[: P.REPLY_SIZE])
        end = P.REPLY_SIZE + header.payload_length
        assert len(data) >= end, "reply stream ends inside a reply"
        replies.append(P.decode_reply(header, data[P.REPLY_SIZE : end]))
        data = data[end:]
    return replies


def exchange(address: str | tuple, data: bytes, half_close: bool = True) -> list[P.Reply]:
    """Send ``data`` on a fresh connection and read replies until the server closes it."""
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(20)
        s.connect(address)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return parse_replies(b"".join(chunks))


def assert_correct(reply: P.Reply, seg: Segmenter, img: np.ndarray, frame_id: int) -> None:
    expected = seg.predict_tiled(img).mask
    assert reply.header.status == P.STATUS_OK, reply.message
    assert reply.header.frame_id == frame_id
    assert reply.header.num_classes == seg.num_classes == tiny_models.K
    np.testing.assert_array_equal(reply.mask, expected)
    np.testing.assert_array_equal(reply.fractions, P.class_fractions(expected, seg.num_classes))


@contextlib.contextmanager
def running(seg: Segmenter, path: Path, **options):
    server = make_server(FrameHandler(seg, ServerOptions(**options)), unix=path)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield str(path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def address(seg, tmp_path_factory):
    with running(seg, tmp_path_factory.mktemp("s") / "a.sock", max_frame_bytes=200_000,
                 timeout=10) as path:
        yield path


def test_frames_larger_than_the_tile_are_tiled_and_match_the_segmenter(seg, address):
    assert seg.tile == (64, 64)
    frames = [image(100, 150, 1), image(40, 50, 2), image(70, 64, 3, np.uint16),
              image(64, 90, 4, np.float32)]
    replies = exchange(address, b"".join(P.encode_request(10 + i, f) for i, f in enumerate(frames)))
    assert len(replies) == 4
    for i, (reply, frame) in enumerate(zip(replies, frames, strict=True)):
        assert_correct(reply, seg, frame, 10 + i)
        assert reply.header.inference_us > 0
    assert len(np.unique(replies[0].mask)) >= 2  # a mask that can tell models apart


def test_no_mask_flag_gives_fractions_only(seg, address):
    frame = image(80, 80, 5)
    (reply,) = exchange(address, P.encode_request(3, frame, flags=P.FLAG_NO_MASK))
    assert reply.header.status == P.STATUS_OK and reply.mask is None
    assert (reply.header.height, reply.header.width, reply.header.payload_length) == (0, 0, 16)
    np.testing.assert_array_equal(reply.fractions,
                                  P.class_fractions(seg.predict_tiled(frame).mask, 4))


def forged(frame_id=9, h=20, w=20, c=3, dtype=P.DTYPE_UINT8, n=None, flags=0, version=P.VERSION,
           magic=P.REQUEST_MAGIC, body=None) -> bytes:
    n = h * w * c * P.DTYPES.get(dtype, np.dtype("u1")).itemsize if n is None else n
    head = P.encode_request_header(P.RequestHeader(frame_id, h, w, c, dtype, n, flags, version,
                                                   magic))
    return head + (bytes(min(n, 1 << 16)) if body is None else body)


VALID = P.encode_request(1, image(20, 20))
ERROR_CASES = {
    "bad magic": (forged(magic=b"JUNK"), [(P.STATUS_BAD_MAGIC, 0)]),
    "bad version": (forged(version=9), [(P.STATUS_BAD_VERSION, 9)]),
    "reserved flag": (forged(flags=0x0100), [(P.STATUS_BAD_HEADER, 9)]),
    "zero width": (forged(w=0), [(P.STATUS_BAD_HEADER, 9)]),
    "length lies": (forged(n=1199, body=bytes(1200)), [(P.STATUS_LENGTH_MISMATCH, 9)]),
    "too large": (forged(h=1000, w=1000), [(P.STATUS_TOO_LARGE, 9)]),
    "huge length": (forged(n=2**63, body=b""), [(P.STATUS_TOO_LARGE, 9)]),
    "4 channels": (forged(c=4), [(P.STATUS_UNSUPPORTED_CHANNELS, 9)]),
    "dtype code": (forged(dtype=7, n=1200), [(P.STATUS_UNSUPPORTED_DTYPE, 9)]),
    "truncated header": (VALID[:10], [(P.STATUS_BAD_HEADER, 0)]),
    "truncated payload": (VALID[:500], [(P.STATUS_LENGTH_MISMATCH, 1)]),
    "nothing": (b"", []),
    "valid then junk": (VALID + b"x" * 40, [(P.STATUS_OK, 1), (P.STATUS_BAD_MAGIC, 0)]),
    "too small then valid": (forged(h=8, w=8) + VALID, [(P.STATUS_REJECTED, 9), (P.STATUS_OK, 1)]),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_bad_frames_get_an_error_reply_and_the_server_goes_on(case, seg, address):
    data, expected = ERROR_CASES[case]
    replies = exchange(address, data)
    assert [(r.header.status, r.header.frame_id) for r in replies] == expected
    assert all(r.message for r in replies if r.header.status != P.STATUS_OK)
    frame = image(30, 70, 6)
    assert_correct(exchange(address, P.encode_request(77, frame))[0], seg, frame, 77)


def test_client_vanishing_mid_frame(seg, address):
    for cut in (5, 32, 32 + 600):
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(address)
            s.sendall(VALID[:cut])
    frame = image(20, 33, 7)
    assert_correct(exchange(address, P.encode_request(5, frame))[0], seg, frame, 5)


def test_silent_client_is_closed_after_the_timeout(seg, tmp_path_factory):
    with running(seg, tmp_path_factory.mktemp("t") / "t.sock", timeout=0.3) as path:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(20)
            s.connect(path)
            s.sendall(VALID[:7])
            assert s.recv(100) == b""  # closed by the server, no reply
        frame = image(20, 20, 8)
        assert_correct(exchange(path, P.encode_request(2, frame))[0], seg, frame, 2)


def test_connections_over_the_cap_get_busy(seg, tmp_path_factory):
    with running(seg, tmp_path_factory.mktemp("b") / "b.sock", max_connections=1) as path:
        with socket.socket(socket.AF_UNIX) as first:
            first.connect(path)
            first.sendall(VALID)  # its reply proves that the first connection holds the slot
            head = first.recv(P.REPLY_SIZE, socket.MSG_WAITALL)
            assert P.decode_reply_header(head).status == P.STATUS_OK
            (busy,) = exchange(path, VALID)
            assert busy.header.status == P.STATUS_BUSY
        for _ in range(200):  # the slot is released when the server notices the close
            replies = exchange(path, VALID)
            if replies[0].header.status == P.STATUS_OK:
                break
            time.sleep(0.05)
        assert replies[0].header.status == P.STATUS_OK


def test_tcp_addresses_are_loopback_unless_allowed():
    assert parse_tcp("127.0.0.1:5555") == ("127.0.0.1", 5555)
    assert parse_tcp("localhost:0") == ("127.0.0.1", 0)
    assert parse_tcp("[::1]:7") == ("::1", 7)
    assert parse_tcp("8080") == ("127.0.0.1", 8080)
    assert parse_tcp("0.0.0.0:5555", allow_remote=True) == ("0.0.0.0", 5555)
    for bad in ("0.0.0.0:5555", "192.168.1.4:80", "example.com:80", "127.0.0.1:x",
                "127.0.0.1:70000"):
        with pytest.raises(EdgesegError):
            parse_tcp(bad)


def test_socket_path_holding_a_file_is_not_replaced(seg, tmp_path):
    path = tmp_path / "f.sock"
    path.write_text("keep me")
    with pytest.raises(EdgesegError, match="not a socket"):
        make_server(FrameHandler(seg), unix=path)
    assert path.read_text() == "keep me"


# ---------------------------------------------------------------- the server process, fuzzed


def start_server(args: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """Start ``edgeseg-run serve ...``; returns the process and its 'listening on' address."""
    with log.open("wb") as err:
        proc = subprocess.Popen([*RUN, "serve", *args], stderr=err, stdout=subprocess.DEVNULL)
    for _ in range(600):
        found = re.search(r"listening on (\S+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            pytest.fail(f"serve exited with {proc.returncode}: {log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"serve did not start: {log.read_text()}")


@pytest.fixture(scope="module")
def served(model_path, tmp_path_factory):
    folder = tmp_path_factory.mktemp("p")
    sock = folder / "p.sock"
    proc, where = start_server([str(model_path), "--socket", str(sock), "--max-frame-mb", "0.25",
                                "--timeout", "10"], folder / "serve.log")
    assert where == f"unix:{sock}"
    yield proc, str(sock)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    assert not sock.exists()


def oracle(data: bytes) -> list[tuple[int, bool]]:
    """The replies the protocol prescribes for a byte stream (3-channel model, LIMIT): per reply
    its status and whether a mask comes with it (an OK reply without ``FLAG_NO_MASK``)."""
    replies = []
    while data:
        if len(data) < P.REQUEST_SIZE:
            return [*replies, (P.STATUS_BAD_HEADER, False)]
        header = P.decode_request_header(data[: P.REQUEST_SIZE])
        try:
            P.check_request(header, LIMIT, (3,))
        except P.ProtocolError as exc:
            return [*replies, (exc.status, False)]
        if len(data) - P.REQUEST_SIZE < header.payload_length:
            return [*replies, (P.STATUS_LENGTH_MISMATCH, False)]
        if min(header.height, header.width) >= 16:
            replies.append((P.STATUS_OK, not header.flags & P.FLAG_NO_MASK))
        else:
            replies.append((P.STATUS_REJECTED, False))
        data = data[P.REQUEST_SIZE + header.payload_length :]
    return replies


@st.composite
def streams(draw) -> bytes:
    frame = P.encode_request(draw(st.integers(0, 2**32 - 1)),
                             image(draw(st.integers(16, 70)), draw(st.integers(16, 70)),
                                   draw(st.integers(0, 99))))
    data = bytearray(frame * draw(st.integers(1, 2)))
    kind = draw(st.sampled_from(["field", "flip", "truncate", "lie", "append", "random", "none"]))
    if kind == "field":  # one header field set to a small or an arbitrary value
        _, offset, size = draw(st.sampled_from(P.field_layout(P.REQUEST_FORMAT, P.REQUEST_FIELDS)))
        value = draw(st.one_of(st.integers(0, 20), st.integers(0, 2 ** (8 * size) - 1)))
        data[offset : offset + size] = value.to_bytes(size, "little")
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            pos = draw(st.integers(0, P.REQUEST_SIZE - 1))
            data[pos] ^= draw(st.integers(1, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "lie":
        value = draw(st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2 * len(frame))))
        data[24:32] = value.to_bytes(8, "little")
    elif kind == "append":
        data += draw(st.binary(min_size=1, max_size=100))
    elif kind == "random":
        data = bytearray(draw(st.binary(max_size=200)))
    return bytes(data)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=streams())
@example(data=P.encode_request(0, image(16, 16), flags=P.FLAG_NO_MASK) * 2)  # found by the fuzzer
def test_fuzzed_streams_get_the_prescribed_replies(served, data):
    proc, sock = served
    replies = exchange(sock, data)
    prescribed = oracle(data)
    assert [r.header.status for r in replies] == [status for status, _ in prescribed]
    event(" ".join(P.STATUS_NAMES[r.header.status] for r in replies) or "closed")
    for r, (_, with_mask) in zip(replies, prescribed, strict=True):
        if r.header.status == P.STATUS_OK:
            if with_mask:
                assert r.mask.shape == (r.header.height, r.header.width) != (0, 0)
            else:  # FLAG_NO_MASK: the class fractions alone
                assert r.mask is None and (r.header.height, r.header.width) == (0, 0)
            assert abs(float(r.fractions.sum()) - 1.0) < 1e-5
    assert proc.poll() is None


def test_server_process_survived_the_fuzzing_and_still_answers(served, seg):
    proc, sock = served
    frame = image(90, 130, 11)
    replies = exchange(sock, P.encode_request(1234, frame) * 2)
    for r in replies:
        assert_correct(r, seg, frame, 1234)
    assert len(replies) == 2 and proc.poll() is None


# ---------------------------------------------------------------- C client, stdio, TCP


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc/gcc/clang) on PATH: cannot build firmware_bridge/serve/c/client.c")
    exe = tmp_path_factory.mktemp("c") / "edgeseg_client"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O2", "-o",
                    str(exe), str(CLIENT_C), "-lm"], check=True)
    return exe


def run_client(client: Path, where: list[str], ppm: Path, pgm: Path, *extra: str):
    return subprocess.run([str(client), *where, *extra, str(ppm), str(pgm)], capture_output=True,
                          text=True, timeout=60)


def test_c_client_mask_equals_edgeseg_run_predict(client, served, model_path, tmp_path):
    frame = image(100, 140, 12)
    Image.fromarray(frame).save(tmp_path / "frame.ppm")
    Image.fromarray(frame).save(tmp_path / "frame.png")
    done = run_client(client, ["--unix", served[1]], tmp_path / "frame.ppm",
                      tmp_path / "mask.pgm", "--repeat", "3", "--frame-id", "40")
    assert done.returncode == 0, done.stderr
    subprocess.run([*RUN, "predict", str(model_path), str(tmp_path / "frame.png"), "--out",
                    str(tmp_path / "pred"), "--quiet"], check=True, capture_output=True)
    predicted = np.array(Image.open(tmp_path / "pred" / "frame_mask.png"))
    c_mask = np.array(Image.open(tmp_path / "mask.pgm"))
    np.testing.assert_array_equal(c_mask, predicted)
    lines = done.stdout.splitlines()
    assert [line.split(":")[0] for line in lines if line.startswith("frame")] == \
        ["frame 40", "frame 41", "frame 42"]
    printed = [float(line.split()[-1]) for line in lines[-tiny_models.K :]]
    np.testing.assert_allclose(printed, P.class_fractions(predicted, tiny_models.K), atol=1e-6)


def test_c_client_reports_an_error_status(client, served, tmp_path):
    Image.fromarray(image(20, 20)[..., 0]).save(tmp_path / "grey.pgm")  # 1 band: refused
    done = run_client(client, ["--unix", served[1]], tmp_path / "grey.pgm", tmp_path / "m.pgm")
    assert done.returncode == 3
    assert f"server status {P.STATUS_UNSUPPORTED_CHANNELS}" in done.stderr
    assert not (tmp_path / "m.pgm").exists()


def test_stdio_mode(model_path, seg):
    frames = [image(70, 90, 13), image(16, 20, 14)]
    data = (P.encode_request(1, frames[0]) + P.encode_request(2, frames[1], P.FLAG_NO_MASK)
            + P.encode_request(3, frames[0]))
    done = subprocess.run([*RUN, "serve", str(model_path), "--stdio"], input=data,
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    replies = parse_replies(done.stdout)
    assert_correct(replies[0], seg, frames[0], 1)
    assert replies[1].mask is None and replies[1].header.frame_id == 2
    assert_correct(replies[2], seg, frames[0], 3)
    assert b"3 frame(s) served" in done.stderr
    bad = subprocess.run([*RUN, "serve", str(model_path), "--stdio"], input=b"JUNK" + bytes(60),
                         capture_output=True, timeout=120)
    assert [r.header.status for r in parse_replies(bad.stdout)] == [P.STATUS_BAD_MAGIC]


def test_tcp_loopback_with_the_c_client(client, model_path, seg, tmp_path):
    proc, where = start_server([str(model_path), "--tcp", "127.0.0.1:0"], tmp_path / "log")
    try:
        host, port = where.removeprefix("tcp:").rsplit(":", 1)
        assert host == "127.0.0.1" and int(port) > 0
        frame = image(66, 67, 15)
        Image.fromarray(frame).save(tmp_path / "f.ppm")
        done = run_client(client, ["--tcp", f"127.0.0.1:{port}"], tmp_path / "f.ppm",
                          tmp_path / "f.pgm")
        assert done.returncode == 0, done.stderr
        np.testing.assert_array_equal(np.array(Image.open(tmp_path / "f.pgm")),
                                      seg.predict_tiled(frame).mask)
        (reply,) = exchange(("127.0.0.1", int(port)), forged(h=300, w=300, version=3))
        assert reply.header.status == P.STATUS_BAD_VERSION
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


def test_remote_tcp_needs_allow_remote(model_path):
    done = subprocess.run([*RUN, "serve", str(model_path), "--tcp", "0.0.0.0:0"],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert done.returncode == 2 and "--allow-remote" in done.stderr
