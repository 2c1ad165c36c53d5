"""The frame protocol: encode/decode, header checks, and agreement of C header, doc and code."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.serve import protocol as P

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "protocol.md"
HEADER = REPO / "firmware_bridge" / "serve" / "c" / "edgeseg_protocol.h"

u16 = st.integers(0, 2**16 - 1)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


def good_header(**kw) -> P.RequestHeader:
    fields = dict(frame_id=5, height=4, width=6, channels=3, dtype=P.DTYPE_UINT8,
                  payload_length=72)
    fields.update(kw)
    return P.RequestHeader(**fields)


@given(u32, u32, u32, u16, u16, u64, u16, u16, st.binary(min_size=4, max_size=4))
def test_request_header_round_trip(fid, h, w, c, dt, n, flags, version, magic):
    header = P.RequestHeader(fid, h, w, c, dt, n, flags, version, magic)
    data = P.encode_request_header(header)
    assert len(data) == P.REQUEST_SIZE == 32
    assert P.decode_request_header(data) == header


@given(u16, u32, u32, u32, u16, u64, u64)
def test_reply_header_round_trip(status, fid, h, w, k, us, n):
    header = P.ReplyHeader(status, fid, h, w, k, us, n)
    data = P.encode_reply_header(header)
    assert len(data) == P.REPLY_SIZE == 40
    assert P.decode_reply_header(data) == header


@settings(max_examples=200)
@given(st.binary(min_size=32, max_size=32))
def test_any_32_bytes_are_accepted_or_refused_with_a_status(data):
    header = P.decode_request_header(data)
    try:
        P.check_request(header, max_frame_bytes=1 << 20)
    except P.ProtocolError as exc:
        assert exc.status in P.STATUS_NAMES and exc.status not in P.KEEP_OPEN
        assert exc.frame_id == (0 if header.magic != P.REQUEST_MAGIC else header.frame_id)
    else:
        assert header.payload_length == P.frame_nbytes(header.height, header.width,
                                                       header.channels, header.dtype) <= 1 << 20


@pytest.mark.parametrize(("change", "status"), [
    (dict(magic=b"ESRX"), P.STATUS_BAD_MAGIC),
    (dict(version=2), P.STATUS_BAD_VERSION),
    (dict(flags=0x8000), P.STATUS_BAD_HEADER),
    (dict(height=0, payload_length=0), P.STATUS_BAD_HEADER),
    (dict(dtype=9), P.STATUS_UNSUPPORTED_DTYPE),
    (dict(channels=5, payload_length=120), P.STATUS_UNSUPPORTED_CHANNELS),
    (dict(height=1000, width=1000, payload_length=3_000_000), P.STATUS_TOO_LARGE),
    (dict(payload_length=2**63), P.STATUS_TOO_LARGE),
    (dict(payload_length=71), P.STATUS_LENGTH_MISMATCH),
    (dict(dtype=P.DTYPE_UINT16), P.STATUS_LENGTH_MISMATCH),
])
def test_check_request_statuses(change, status):
    with pytest.raises(P.ProtocolError) as info:
        P.check_request(good_header(**change), max_frame_bytes=100_000)
    assert info.value.status == status


def test_check_request_accepts_and_honours_served_channels():
    P.check_request(good_header(), max_frame_bytes=72)
    P.check_request(good_header(dtype=P.DTYPE_FLOAT32, payload_length=288))
    with pytest.raises(P.ProtocolError) as info:
        P.check_request(good_header(), channels=(1,))
    assert info.value.status == P.STATUS_UNSUPPORTED_CHANNELS


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_request_pixels_round_trip(dtype):
    image = (np.arange(5 * 7 * 3) * 3).astype(dtype).reshape(5, 7, 3)
    data = P.encode_request(11, image, flags=P.FLAG_NO_MASK)
    header = P.decode_request_header(data[:32])
    P.check_request(header)
    assert (header.frame_id, header.height, header.width, header.channels) == (11, 5, 7, 3)
    assert header.flags == P.FLAG_NO_MASK and header.payload_length == image.nbytes
    np.testing.assert_array_equal(P.decode_pixels(header, data[32:]), image)


def test_reply_round_trip_and_fractions():
    mask = np.array([[0, 1, 1], [2, 1, 0]], np.uint8)
    fractions = P.class_fractions(mask, 4)
    np.testing.assert_allclose(fractions, [2 / 6, 3 / 6, 1 / 6, 0], rtol=1e-7)
    data = P.encode_reply(3, mask, fractions, 99)
    header = P.decode_reply_header(data[:40])
    assert (header.status, header.frame_id, header.num_classes, header.inference_us) == (0, 3, 4, 99)
    reply = P.decode_reply(header, data[40:])
    np.testing.assert_array_equal(reply.mask, mask)
    np.testing.assert_array_equal(reply.fractions, fractions)
    with pytest.raises(P.ProtocolError):
        P.decode_reply(header, data[40:-1])


def test_error_reply_is_bounded():
    data = P.encode_error(P.STATUS_REJECTED, 8, "x" * 5000)
    header = P.decode_reply_header(data[:40])
    assert header.payload_length == P.MAX_MESSAGE == len(data) - 40
    assert P.decode_reply(header, data[40:]).message == "x" * P.MAX_MESSAGE


def test_reply_header_with_bad_magic_is_refused():
    data = bytearray(P.encode_error(1, 0, ""))
    data[0] = ord("X")
    with pytest.raises(P.ProtocolError):
        P.decode_reply_header(bytes(data))


# ---------------------------------------------------------------- docs/protocol.md agreement


def doc_table(heading: str) -> list[list[str]]:
    """Rows of the first markdown table after ``heading`` in docs/protocol.md."""
    text = DOC.read_text()
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not set(cells[0]) <= set("-"):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the column names


def test_doc_header_tables_match_struct_formats():
    for heading, fmt, names, size in [("## Request header", P.REQUEST_FORMAT, P.REQUEST_FIELDS, 32),
                                      ("## Reply header", P.REPLY_FORMAT, P.REPLY_FIELDS, 40)]:
        rows = [(r[3], int(r[0]), int(r[1])) for r in doc_table(heading)]
        assert rows == P.field_layout(fmt, names)
        assert struct.calcsize(fmt) == size == sum(r[2] for r in rows)
        assert f"({size} bytes)" in heading + DOC.read_text().split(heading)[1].splitlines()[0]


def test_doc_code_tables_match_constants():
    statuses = {int(r[0]): r[1].lower() for r in doc_table("### Status codes")}
    assert statuses == P.STATUS_NAMES
    kept = {int(r[0]) for r in doc_table("### Status codes") if r[2] == "stays open"}
    assert kept == P.KEEP_OPEN
    dtypes = {int(r[0]): (int(r[2]), np.dtype(r[3].strip("`"))) for r in doc_table("### Pixel types")}
    assert dtypes == {k: (v.itemsize, v) for k, v in P.DTYPES.items()}
    flags = {int(r[0], 16): r[1] for r in doc_table("### Request flags")}
    assert flags == {P.FLAG_NO_MASK: "NO_MASK"}


def doc_examples() -> list[bytes]:
    blocks = re.findall(r"```text\n(.*?)```", DOC.read_text(), re.S)
    hexdumps = [b for b in blocks if b.startswith("0000:")]
    return [bytes.fromhex(" ".join(line.split(":", 1)[1] for line in b.strip().splitlines()))
            for b in hexdumps]


def test_doc_examples_are_what_the_encoder_writes():
    request, reply, error = doc_examples()
    assert request == P.encode_request(7, np.arange(18, dtype=np.uint8).reshape(2, 3, 3))
    mask = np.array([[0, 1, 1], [2, 1, 0]], np.uint8)
    assert reply == P.encode_reply(7, mask, P.class_fractions(mask, 3), 1234)
    bad = P.encode_request_header(good_header(frame_id=7, version=2))
    with pytest.raises(P.ProtocolError) as info:
        P.check_request(P.decode_request_header(bad))
    assert error == P.encode_error(info.value.status, info.value.frame_id, str(info.value))


# ---------------------------------------------------------------- the C header agreement

LAYOUT_C = r"""
#include <stdio.h>
#include "edgeseg_protocol.h"
#define F(T, f) printf(#T " " #f " %zu %zu\n", offsetof(T, f), sizeof(((T *)0)->f))
#define K(name) printf("const " #name " %lld\n", (long long)(name))
int main(void) {
    printf("size eseg_request_header %zu\nsize eseg_reply_header %zu\n",
           sizeof(eseg_request_header), sizeof(eseg_reply_header));
    %FIELDS%
    %CONSTS%
    printf("magic %s %s\n", ESEG_REQUEST_MAGIC, ESEG_REPLY_MAGIC);
    return 0;
}
"""

C_STATUS = {code: f"ESEG_STATUS_{name.upper()}" for code, name in P.STATUS_NAMES.items()}
C_CONSTS = {"ESEG_PROTOCOL_VERSION": P.VERSION, "ESEG_REQUEST_SIZE": P.REQUEST_SIZE,
            "ESEG_REPLY_SIZE": P.REPLY_SIZE, "ESEG_MAX_MESSAGE": P.MAX_MESSAGE,
            "ESEG_DTYPE_UINT8": P.DTYPE_UINT8, "ESEG_DTYPE_UINT16": P.DTYPE_UINT16,
            "ESEG_DTYPE_FLOAT32": P.DTYPE_FLOAT32, "ESEG_FLAG_NO_MASK": P.FLAG_NO_MASK,
            **{name: code for code, name in C_STATUS.items()}}


@pytest.fixture(scope="module")
def cc() -> str:
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler (cc/gcc/clang) on PATH: cannot check the C header")
    return compiler


def test_c_header_layout_and_constants_match(cc, tmp_path):
    fields = [f"F(eseg_request_header, {n});" for n in P.REQUEST_FIELDS]
    fields += [f"F(eseg_reply_header, {n});" for n in P.REPLY_FIELDS]
    src = LAYOUT_C.replace("%FIELDS%", "\n    ".join(fields))
    src = src.replace("%CONSTS%", "\n    ".join(f"K({n});" for n in C_CONSTS))
    (tmp_path / "layout.c").write_text(src)
    exe = tmp_path / "layout"
    subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-I", str(HEADER.parent),
                    "-o", str(exe), str(tmp_path / "layout.c")], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    lines = [line.split() for line in out.splitlines()]
    sizes = {r[1]: int(r[2]) for r in lines if r[0] == "size"}
    assert sizes == {"eseg_request_header": 32, "eseg_reply_header": 40}
    c_req = [(r[1], int(r[2]), int(r[3])) for r in lines if r[0] == "eseg_request_header"]
    c_rep = [(r[1], int(r[2]), int(r[3])) for r in lines if r[0] == "eseg_reply_header"]
    assert c_req == P.field_layout(P.REQUEST_FORMAT, P.REQUEST_FIELDS)
    assert c_rep == P.field_layout(P.REPLY_FORMAT, P.REPLY_FIELDS)
    consts = {r[1]: int(r[2]) for r in lines if r[0] == "const"}
    assert consts == C_CONSTS
    assert ["magic", "ESRQ", "ESRP"] in lines


def test_c_header_compiles_as_cxx(cc, tmp_path):
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    src = tmp_path / "use.cc"
    src.write_text('#include "edgeseg_protocol.h"\nint main() { eseg_request_header h{}; '
                   "uint8_t b[ESEG_REQUEST_SIZE]; eseg_encode_request(&h, b); return b[0]; }\n")
    subprocess.run([cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-I", str(HEADER.parent),
                    "-o", str(tmp_path / "use"), str(src)], check=True)


def test_c_encoder_writes_the_python_bytes(cc, tmp_path):
    src = tmp_path / "enc.c"
    src.write_text(r"""
#include <stdio.h>
#include <string.h>
#include "edgeseg_protocol.h"
int main(void) {
    eseg_request_header h = {{0}, 0, 0, 0, 0, 0, 0, 0, 0};
    uint8_t b[ESEG_REQUEST_SIZE];
    memcpy(h.magic, ESEG_REQUEST_MAGIC, 4);
    h.version = ESEG_PROTOCOL_VERSION; h.flags = ESEG_FLAG_NO_MASK; h.frame_id = 0xA1B2C3D4u;
    h.height = 70000; h.width = 3; h.channels = 4; h.dtype = ESEG_DTYPE_UINT16;
    h.payload_length = 70000ull * 3 * 4 * 2;
    eseg_encode_request(&h, b);
    for (unsigned i = 0; i < sizeof b; i++) printf("%02x", b[i]);
    return 0;
}
""")
    subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", str(HEADER.parent), "-o",
                    str(tmp_path / "enc"), str(src)], check=True)
    out = subprocess.run([str(tmp_path / "enc")], check=True, capture_output=True, text=True)
    expected = P.encode_request_header(P.RequestHeader(0xA1B2C3D4, 70000, 3, 4, P.DTYPE_UINT16,
                                                       70000 * 3 * 4 * 2, P.FLAG_NO_MASK))
    assert bytes.fromhex(out.stdout) == expected


def test_microcontroller_doc_model_files_compile(tmp_path):
    """The generated-file example in docs/microcontrollers.md is valid C++ as written."""
    cxx = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler on PATH")
    text = (REPO / "docs" / "microcontrollers.md").read_text()
    blocks = re.findall(r"```c\n(.*?)```", text, re.S)
    header = next(b for b in blocks if "#ifndef EDGESEG_MODEL_H" in b)
    source = next(b for b in blocks if "g_edgeseg_model[] = {" in b)
    (tmp_path / "edgeseg_model.h").write_text(header)
    (tmp_path / "edgeseg_model.cc").write_text(source)
    (tmp_path / "main.cc").write_text(
        '#include "edgeseg_model.h"\n#include <cstdint>\n'
        "int main() { return (reinterpret_cast<std::uintptr_t>(g_edgeseg_model) % 16 != 0) + "
        "(g_edgeseg_model_len != 8) + (g_edgeseg_class_names[EDGESEG_NUM_CLASSES - 1][0] != 'W'); }\n")
    exe = tmp_path / "model"
    subprocess.run([cxx, "-std=c++11", "-Wall", "-Wextra", "-Werror", "-o", str(exe),
                    str(tmp_path / "edgeseg_model.cc"), str(tmp_path / "main.cc")], check=True)
    assert subprocess.run([str(exe)]).returncode == 0
