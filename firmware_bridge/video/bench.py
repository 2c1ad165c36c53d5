"""Frames per second of a model over generated videos (``edgeseg-run bench --video 720,1080``)."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from firmware_bridge.errors import require

WIDTHS = {480: 854, 720: 1280, 1080: 1920, 2160: 3840}


def generate_video(path: Path, height: int, frames: int, rate: int = 30) -> Path:
    """An H.264 video of ``frames`` aerial-like frames, 16:9 at ``height`` rows."""
    av = require("av", "video")
    from firmware_bridge.io.synthetic_raster import synthetic_block

    width = WIDTHS.get(height, height * 16 // 9 // 2 * 2)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(rate))
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for i in range(frames):  # the scene drifts by 8 rows a frame, as under a drone
            image = np.stack(synthetic_block(i * 8, 0, height, width, 3, np.uint8), axis=-1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def video_fps(segmenter, heights: Sequence[int], frames: int = 60) -> list[dict]:
    """Predicted frames per second on a generated file of each height (CSV output only).

    Returns:
        One row per height: ``{"height", "width", "frames", "seconds", "fps", "ms_per_frame"}``.
    """
    from firmware_bridge.video.run import predict_video

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgeseg-video-bench-") as tmp:
        for height in heights:
            path = generate_video(Path(tmp) / f"v{height}.mp4", height, frames)
            report = predict_video(segmenter, path, tmp)
            rows.append({"height": height, "width": WIDTHS.get(height), "frames": report.predicted,
                         "seconds": round(report.seconds, 2), "fps": round(report.fps, 2),
                         "ms_per_frame": round(1e3 / report.fps, 1) if report.fps else None})
    return rows
