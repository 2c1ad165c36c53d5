"""int8 against fp32: the ISA wording, the choice between artifacts of one model, the refusal
of artifacts of different models, and the bench line.

The decision (:func:`firmware_bridge.runtime.variants.choose`) is pure: the tests give it the
times. Where a command runs, the measurement is replaced by fixed times, so the artifact it
must pick is known.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from tiny_models import metadata, smooth_image, tflite_bytes

from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime import variants
from firmware_bridge.runtime.cpu import arch_of, cpu_isa, int8_line, parse_cpuinfo
from firmware_bridge.runtime.metadata import tflite_with_metadata
from firmware_bridge.runtime.segmenter import Segmenter, SegmenterOptions
from firmware_bridge.runtime.variants import (
    QUANTIZED,
    check_same_model,
    choose,
    name_precision,
    open_fastest,
    precision_of,
    restrict,
    siblings,
)

AVX2 = parse_cpuinfo("processor : 0\nflags : fpu sse2 avx avx2 fma bmi2\n", "x86_64")
VNNI = parse_cpuinfo("flags : avx2 fma avx512f avx512_vnni\n", "x86_64")
AMX = parse_cpuinfo("flags\t\t: avx2 fma amx_tile amx_int8 amx_bf16\n", "x86_64")
ARM_DOT = parse_cpuinfo("Features : fp asimd evtstrm aes asimddp i8mm\n", "aarch64")
ARM_PLAIN = parse_cpuinfo("Features : fp asimd evtstrm crc32\n", "aarch64")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """An export folder with the tiny model in fp32 and int8 (``tflite_bytes``, no TensorFlow)."""
    folder = tmp_path_factory.mktemp("export")
    meta = metadata(layout="NHWC")
    (folder / "model_fp32.tflite").write_bytes(tflite_with_metadata(tflite_bytes(), meta))
    (folder / "model_int8.tflite").write_bytes(tflite_with_metadata(tflite_bytes(quant=True), meta))
    other = dataclasses.replace(meta, classes=["sea", "sand", "road", "roof"])
    (folder / "other_int8.tflite").write_bytes(tflite_with_metadata(tflite_bytes(quant=True), other))
    return folder


# --- the CPU's flags and the line they give ---------------------------------------------------

def test_the_flags_that_decide_int8():
    assert AVX2.arch == "x86" and AVX2.int8_flags == () and AVX2.int8_expected is False
    assert AVX2.describe() == "x86 avx2 fma, no avx512_vnni, avx_vnni or amx_int8"
    assert VNNI.int8_flags == ("avx512_vnni",) and VNNI.int8_expected is True
    assert VNNI.describe() == "x86 avx2 fma avx512f avx512_vnni"
    assert AMX.int8_flags == ("amx_int8",) and AMX.int8_expected is True
    assert ARM_DOT.int8_flags == ("asimddp", "i8mm") and ARM_DOT.int8_expected is True
    assert ARM_DOT.describe() == "arm asimddp i8mm"
    assert ARM_PLAIN.int8_expected is None and ARM_PLAIN.describe() == "arm, no asimddp or i8mm"
    assert parse_cpuinfo("", "riscv64").describe() == "riscv64, int8 instructions unknown"
    assert [arch_of(m) for m in ("x86_64", "AMD64", "aarch64", "armv7l")] == ["x86", "x86", "arm",
                                                                             "arm"]


def test_the_bench_line_from_given_flags():
    line = int8_line(AVX2, int8_name="model_int8.tflite")
    assert line.startswith("int8 vs fp32 on this CPU: int8 is not expected to beat fp32")
    assert "ISA x86 avx2 fma, no avx512_vnni, avx_vnni or amx_int8" in line
    assert "16-bit multiply-adds" in line and "no fp32 model beside model_int8.tflite" in line
    assert "int8 is expected to beat fp32 (ISA x86 avx2 fma avx512f avx512_vnni: 8-bit dot " \
           "products in one instruction)" in int8_line(VNNI)
    assert "int8 is expected to beat fp32 (ISA arm asimddp i8mm" in int8_line(ARM_DOT)
    assert "int8 may or may not beat fp32 (ISA arm, no asimddp or i8mm" in int8_line(ARM_PLAIN)
    # measured: the times decide, the flags explain
    slow = int8_line(AVX2, 10.0, 9.6, "m_int8.tflite", "m_fp32.tflite")
    assert "int8 does not beat fp32, 0.96x its speed (m_int8.tflite 10.00 ms, m_fp32.tflite " \
           "9.60 ms per tile; ISA x86 avx2 fma, no avx512_vnni" in slow
    assert slow.endswith("use m_fp32.tflite") and "not measured" not in slow
    fast = int8_line(VNNI, 5.0, 9.0, "m_int8.tflite", "m_fp32.tflite")
    assert "int8 beats fp32, 1.80x its speed" in fast and fast.endswith("use m_int8.tflite")
    assert "\n" not in slow + fast


# --- the decision, pure -----------------------------------------------------------------------

def test_int8_is_chosen_only_when_it_pays():
    names, precisions = ["m_int8.tflite", "m_fp32.tflite"], ["int8", "fp32"]
    assert choose(names, precisions, [5.0, 9.0]).index == 0
    assert "1.80x the speed of m_fp32.tflite" in choose(names, precisions, [5.0, 9.0]).reason
    slower = choose(names, precisions, [10.0, 9.6], AVX2)
    assert slower.index == 1
    assert "0.96x the speed of m_fp32.tflite, under the 1.05x" in slower.reason
    assert "this CPU: x86 avx2 fma, no avx512_vnni" in slower.reason
    assert choose(names, precisions, [10.0, 10.4]).index == 1  # 1.04x: not worth its accuracy
    assert choose(names, precisions, [10.0, 10.5]).index == 0  # 1.05x: it is
    # the fastest of each kind is compared; among one kind the fastest wins
    four = choose(["a", "b", "c", "d"], ["fp32", "int8", "fp16", "int8"], [9.0, 8.0, 7.0, 6.0])
    assert four.index == 3 and "the speed of c" in four.reason
    assert choose(["a", "b"], ["fp32", "fp16"], [3.0, 2.0]) == variants.Choice(1, "the fastest")
    assert "dynamic" in QUANTIZED
    with pytest.raises(ValueError):
        choose(["a"], ["fp32"], [1.0, 2.0])


def test_prefer_keeps_one_precision():
    assert restrict(["int8", "fp32", "int8"], "fast") == [0, 1, 2]
    assert restrict(["int8", "fp32", "int8"], "int8") == [0, 2]
    with pytest.raises(EdgesegError, match="--prefer fp32: no fp32 artifact among them"):
        restrict(["int8", "dynamic"], "fp32")


def test_export_names_give_precision_and_siblings(tmp_path):
    assert name_precision("out/model_qat_int8.tflite") == ("model", "int8")
    assert name_precision("model_fp16.xml") == ("model", "fp16")
    assert name_precision("model.onnx") == ("model", "fp32")
    assert name_precision("selfie.tflite") == ("selfie", None)
    assert name_precision("_int8.tflite") == ("_int8", None)
    for name in ("model_int8.tflite", "model_fp32.tflite", "model_fp16.tflite", "model_int8.xml",
                 "model.onnx", "model_qat_int8.onnx", "other_fp32.tflite"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in siblings(tmp_path / "model_int8.tflite")] == [
        "model_fp16.tflite", "model_fp32.tflite"]
    assert [p.name for p in siblings(tmp_path / "model_qat_int8.onnx")] == ["model.onnx"]
    assert [p.name for p in siblings(tmp_path / "model.onnx")] == ["model_qat_int8.onnx"]
    assert siblings(tmp_path / "selfie.tflite") == []


def test_names_follow_the_export_formats():
    """Every runnable export format's file name gives the precision of its row."""
    from export.formats import FORMATS
    from firmware_bridge.runtime.backends import model_suffixes

    rows = [f for f in FORMATS.values() if f.suffix.endswith(model_suffixes())]
    assert len(rows) >= 8
    for row in rows:
        stem, precision = name_precision(f"model{row.suffix}")
        assert stem == "model", row.name
        assert (precision in QUANTIZED) == row.quantized, row.name


# --- artifacts opened: one model, timed, the one to use ---------------------------------------

def _open(path: Path) -> Segmenter:
    return Segmenter(path)


def test_the_faster_artifact_is_kept(export):
    paths = [export / "model_int8.tflite", export / "model_fp32.tflite"]
    segs = [_open(p) for p in paths]
    assert [precision_of(p, s) for p, s in zip(paths, segs, strict=True)] == ["int8", "fp32"]
    lines: list[str] = []
    path, seg = open_fastest(paths, _open, measure=lambda s: [2.0, 4.0], say=lines.append)
    assert path == paths[0] and seg.backend.input.dtype == np.uint8
    assert lines == ["timed on 64x64 tiles: model_int8.tflite (int8) 2.00 ms, model_fp32.tflite "
                     "(fp32) 4.00 ms per tile; using model_int8.tflite: model_int8.tflite runs "
                     "2.00x the speed of model_fp32.tflite"]
    path, seg = open_fastest(paths, _open, isa=AVX2, measure=lambda s: [4.0, 3.84],
                             say=lines.append)
    assert path == paths[1] and seg.backend.input.dtype == np.float32
    assert "using model_fp32.tflite: model_int8.tflite runs 0.96x" in lines[-1]
    assert "(this CPU: x86 avx2 fma, no avx512_vnni, avx_vnni or amx_int8)" in lines[-1]
    # --prefer: that precision, untimed
    untimed = []
    path, _ = open_fastest(paths, _open, "fp32", measure=untimed.append, say=lines.append)
    assert path == paths[1] and untimed == [] and lines[-1].endswith("--prefer fp32")
    # one artifact: returned as it is
    path, _ = open_fastest(paths[:1], _open, measure=untimed.append)
    assert path == paths[0] and untimed == []


def test_measure_times_every_model(export):
    segs = [_open(export / "model_int8.tflite"), _open(export / "model_fp32.tflite")]
    ms = variants.measure_ms(segs, rounds=2, warmup=1)
    assert len(ms) == 2 and all(np.isfinite(t) and t > 0 for t in ms)


def test_artifacts_of_different_models_are_refused(export):
    paths = [export / "model_fp32.tflite", export / "other_int8.tflite"]
    with pytest.raises(EdgesegError, match="model_fp32.tflite and other_int8.tflite are not the "
                                           "same model: classes c0,c1,c2,c3 against sea,sand"):
        open_fastest(paths, _open, measure=lambda s: pytest.fail("timed"))
    big = Segmenter(export / "model_fp32.tflite", options=SegmenterOptions(overlap=8))
    with pytest.raises(EdgesegError, match="overlap 16 against 8"):
        check_same_model(paths[:1] * 2, [_open(paths[0]), big])


# --- the commands -----------------------------------------------------------------------------

def test_predict_uses_the_faster_artifact(export, tmp_path, monkeypatch, capsys):
    from PIL import Image

    from firmware_bridge.cli import main

    image = smooth_image(90, 110, seed=5)
    Image.fromarray(image).save(tmp_path / "a.png")
    expected = {name: _open(export / name).predict_tiled(image).mask
                for name in ("model_int8.tflite", "model_fp32.tflite")}
    assert (expected["model_int8.tflite"] != expected["model_fp32.tflite"]).any()
    for times, used in (([2.0, 4.0], "model_int8.tflite"), ([4.0, 3.84], "model_fp32.tflite")):
        monkeypatch.setattr(variants, "measure_ms", lambda segs, t=times: list(t))
        out = tmp_path / used
        assert main(["predict", str(export / "model_int8.tflite"), str(export / "model_fp32.tflite"),
                     str(tmp_path / "a.png"), "--out", str(out), "--quiet"]) == 0
        err = capsys.readouterr().err
        assert f"per tile; using {used}" in err
        np.testing.assert_array_equal(np.asarray(Image.open(out / "a_mask.png")), expected[used])
    # one model and --prefer: the other artifacts of its export are found and timed
    monkeypatch.setattr(variants, "measure_ms", lambda segs: [1.0] * len(segs))
    assert main(["predict", str(export / "model_int8.tflite"), str(tmp_path / "a.png"), "--out",
                 str(tmp_path / "p"), "--prefer", "fast", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "model_int8.tflite (int8) 1.00 ms, model_fp32.tflite (fp32) 1.00 ms" in err
    assert "using model_fp32.tflite" in err


def test_predict_refuses_other_models_and_models_alone(export, tmp_path, capsys):
    from firmware_bridge.cli import main

    code = main(["predict", str(export / "model_fp32.tflite"), str(export / "other_int8.tflite"),
                 str(tmp_path / "a.png"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "are not the same model: classes" in err and "Traceback" not in err
    code = main(["predict", str(export / "model_fp32.tflite"), str(export / "model_int8.tflite"),
                 "--out", str(tmp_path / "o")])
    assert code == 2 and "model_int8.tflite is a model file: give the images" in capsys.readouterr().err


def test_bench_says_whether_int8_pays(export, monkeypatch):
    from firmware_bridge import bench

    seg = _open(export / "model_int8.tflite")
    monkeypatch.setattr(bench, "measure_ms", lambda segs, rounds: [10.0, 9.6])
    got = bench.int8_section(export / "model_int8.tflite", seg, _open, isa=AVX2)
    assert got["int8_ms"] == 10.0 and got["fp32_ms"] == 9.6
    assert got["fp32_model"] == "model_fp32.tflite" and got["int8_flags"] == []
    assert got["line"].startswith("int8 vs fp32 on this CPU: int8 does not beat fp32, 0.96x")
    assert "ISA x86 avx2 fma, no avx512_vnni, avx_vnni or amx_int8" in got["line"]
    # the fp32 model finds its int8 twin and gives the same comparison
    flt = bench.int8_section(export / "model_fp32.tflite", _open(export / "model_fp32.tflite"),
                             _open, isa=VNNI)
    monkeypatch.undo()
    assert flt["int8_model"] == "model_int8.tflite" and flt["int8_flags"] == ["avx512_vnni"]
    # no twin: the flags' expectation; a float model without an int8 twin: nothing to say
    alone = bench.int8_section(export / "other_int8.tflite", _open(export / "other_int8.tflite"),
                               _open, isa=AVX2)
    assert alone["int8_ms"] is None
    assert "int8 is not expected to beat fp32" in alone["line"]
    assert "not measured: no fp32 model beside other_int8.tflite" in alone["line"]
    assert bench.int8_section(export / "x.tflite", _open(export / "model_fp32.tflite"), _open,
                              isa=AVX2) is None


def test_bench_command_prints_the_line(export, capsys):
    pytest.importorskip("rasterio")
    from firmware_bridge.cli import main

    assert main(["bench", str(export / "model_int8.tflite"), "--runs", "2", "--size", "64"]) == 0
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("int8 vs fp32")]
    assert len(lines) == 1 and "model_fp32.tflite" in lines[0]
    assert f"ISA {cpu_isa().describe()}" in lines[0]

