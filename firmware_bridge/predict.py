"""Predict many inputs into a folder: the device-side workflow behind ``edgeseg-run predict``.

:func:`predict_images` runs a Segmenter over images and GeoTIFFs, :func:`predict_videos` over
video sources; each input that fails is reported and the others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from firmware_bridge.errors import EdgesegError
from firmware_bridge.io.images import GEOTIFF_SUFFIXES
from firmware_bridge.io.raster import output_stems, predict_file
from firmware_bridge.progress import progress


def prepare_out(out: str | Path) -> Path:
    """The output folder, created.

    Raises:
        EdgesegError: When it is a file or cannot be created.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise EdgesegError(f"{out}: exists and is not a folder: pass a folder to --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EdgesegError(f"{out}: cannot create the output folder ({exc})") from exc
    return out


def predict_images(seg, inputs: Sequence[str], out: str | Path, bands=None, overlay: bool = False,
                   block: int | None = None, show: bool = False,
                   emit: Callable[[str], None] = print,
                   warn: Callable[[str], None] = print) -> int:
    """Predict every image or GeoTIFF into ``out``; two inputs never write the same file.

    Args:
        seg: The model.
        inputs: Input files.
        out: Output folder (created).
        bands: 1-based bands to feed the model.
        overlay: Also write overlays (ordinary images).
        block: GeoTIFF streaming block edge (``None``: the default).
        show: Progress bars.
        emit: Receives each written file's path.
        warn: Receives notes and the one-line error of each failed input.

    Returns:
        The number of inputs that failed.
    """
    stems = output_stems(list(inputs))
    out = prepare_out(out)
    geotiffs = any(Path(s).suffix.lower() in GEOTIFF_SUFFIXES for s in inputs)
    if overlay and geotiffs:
        warn("note: --overlay applies to ordinary images; GeoTIFFs get a colour-mapped mask")
    if geotiffs and getattr(seg, "resize", "tile") != "tile":
        warn(f"note: resize {seg.resize} applies to ordinary images, video and served frames; "
             "GeoTIFFs are streamed in tiles")
    extra = {} if block is None else {"block": block}
    failed = 0
    jobs = list(zip(inputs, stems, strict=True))
    for src, stem in progress(jobs, len(jobs), "predict", show and len(jobs) > 1):
        try:
            done = predict_file(seg, src, out, bands, overlay, show_progress=show, stem=stem, **extra)
        except EdgesegError as exc:
            warn(f"error: {exc}")
            failed += 1
            continue
        for note in done.notes:
            warn(note)
        if done.nodata:
            warn(f"note: {src}: {done.nodata} of {done.pixels} pixels "
                 f"({100 * done.nodata / done.pixels:.1f} %) have no data (NaN or the nodata "
                 "value): 255 in the mask, in no class")
        for path in done.files:
            emit(str(path))
    return failed


def predict_videos(seg, sources: Sequence, out: str | Path, options, max_frames: int | None = None,
                   show: bool = False, emit: Callable[[str], None] = print,
                   warn: Callable[[str], None] = print) -> int:
    """Predict every video source into ``out`` (see :func:`firmware_bridge.video.predict_video`).

    Args:
        seg: The model.
        sources: :class:`firmware_bridge.video.VideoSource` list.
        out: Output folder (created).
        options: :class:`firmware_bridge.video.VideoOptions`.
        max_frames: Stop after this many source frames.
        show: Progress bars.
        emit: Receives each written file's path.
        warn: Receives the summary, warnings and the one-line error of each failed source.

    Returns:
        The number of sources that failed.
    """
    from firmware_bridge.video import predict_video

    out = prepare_out(out)
    failed = 0
    for source in sources:
        try:
            report = predict_video(seg, source, out, options, max_frames, show)
        except EdgesegError as exc:
            warn(f"error: {exc}")
            failed += 1
            continue
        for path in report.files:
            emit(str(path))
        if report.ended_early:
            warn(f"warning: {source.spec}: the stream ended early ({report.ended_early}); the "
                 f"outputs hold the {report.predicted} frames predicted until then")
        dropped = f", {report.skipped} skipped to keep up with the source" if source.live else ""
        warn(f"{source.spec}: {report.predicted} frames in {report.seconds:.1f} s, "
             f"{report.fps:.1f} frames/s{dropped}")
    return failed
