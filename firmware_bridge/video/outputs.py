"""What a video prediction writes: a per-frame CSV, mask and overlay videos, PNG masks.

Every file is written under a temporary name and renamed only when the whole source was
predicted, so a failure or an interrupt leaves nothing (:meth:`VideoOutputs.abort`).

* ``<stem>_frames.csv``, always: per source frame, its index, time, status (``predicted`` or
  ``skipped``), inference milliseconds, the share of its pixels in each class, and the share
  without data.
* ``<stem>_mask.mkv`` (``--mask-video``): class indices as lossless FFV1 greyscale, one frame
  per predicted frame (value = class index, 255 = no data).
* ``<stem>_overlay.mp4`` (``--overlay-video``): class colours over the frame, MPEG-4.
* ``<stem>_masks/<frame>_mask.png`` (``--png-every N``): palette PNG of every Nth predicted frame.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.images import overlay, write_mask_png
from firmware_bridge.video.frames import FrameResult


@dataclass
class VideoOptions:
    """Which outputs to write.

    Attributes:
        mask_video: Write the lossless mask video.
        overlay_video: Write the overlay video.
        png_every: Write a PNG mask of every Nth predicted frame (0: none).
    """

    mask_video: bool = False
    overlay_video: bool = False
    png_every: int = 0


class _Video:
    """One output video written frame by frame."""

    def __init__(self, path: Path, codec: str, rate: float, size: tuple[int, int], pix_fmt: str,
                 options: dict | None = None) -> None:
        av = require("av", "video")
        self.av = av
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = pix_fmt
        if options:
            self.stream.options = options

    def write(self, array: np.ndarray, fmt: str) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self, flush: bool = True) -> None:
        if flush:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


class VideoOutputs:
    """The files of one source's prediction.

    Args:
        out_dir: Existing output folder.
        stem: Name stem (the source's).
        table: Class names and colours (for the CSV header, overlays and PNG palettes).
        rate: Frames per second of the output videos.
        size: ``(height, width)`` of the frames.
        options: Which outputs.
    """

    def __init__(self, out_dir: Path, stem: str, table: ClassTable, rate: float,
                 size: tuple[int, int], options: VideoOptions) -> None:
        self.out_dir, self.stem, self.table, self.options = Path(out_dir), stem, table, options
        self.work = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".part", dir=self.out_dir))
        self.finals: dict[Path, Path] = {}
        self.colours = table.palette()
        self._csv_file = (self.work / "frames.csv").open("w", newline="")
        self.finals[self.work / "frames.csv"] = self.out_dir / f"{stem}_frames.csv"
        self.csv = csv.writer(self._csv_file)
        self.csv.writerow(["frame", "time_s", "status", "inference_ms",
                           *[f"fraction_{n}" for n in table.names], "fraction_nodata"])
        h, w = size
        even = (h - h % 2, w - w % 2)  # 4:2:0 video needs even sides
        self.mask_video = self.overlay_video = None
        if options.mask_video:
            self.mask_video = _Video(self.work / "mask.mkv", "ffv1", rate, size, "gray")
            self.finals[self.work / "mask.mkv"] = self.out_dir / f"{stem}_mask.mkv"
        if options.overlay_video:
            self.overlay_video = _Video(self.work / "overlay.mp4", "mpeg4", rate, even, "yuv420p",
                                        {"qscale": "3"})
            self.finals[self.work / "overlay.mp4"] = self.out_dir / f"{stem}_overlay.mp4"
        if options.png_every:
            (self.work / "masks").mkdir()
            self.finals[self.work / "masks"] = self.out_dir / f"{stem}_masks"
        self.predicted = 0

    def add(self, result: FrameResult) -> None:
        """Record one predicted frame (and the frames skipped before it)."""
        for index in result.skipped:
            self.csv.writerow([index, "", "skipped", "", *[""] * len(self.table.names), ""])
        nodata = 1.0 - float(result.fractions.sum())
        self.csv.writerow([result.index, f"{result.time_s:.4f}", "predicted",
                           f"{result.inference_ms:.2f}", *[f"{v:.6f}" for v in result.fractions],
                           f"{max(nodata, 0.0):.6f}"])
        if self.mask_video:
            self.mask_video.write(result.mask, "gray")
        if self.overlay_video:
            h, w = result.mask.shape
            blend = overlay(result.image, self.table.colourise(result.mask))
            self.overlay_video.write(blend[: h - h % 2, : w - w % 2], "rgb24")
        if self.options.png_every and self.predicted % self.options.png_every == 0:
            write_mask_png(self.work / "masks" / f"{result.index:06d}_mask.png", result.mask,
                           self.colours)
        self.predicted += 1

    def finish(self) -> list[Path]:
        """Close every file and move it to its final name; returns the final paths."""
        self._csv_file.close()
        for video in (self.mask_video, self.overlay_video):
            if video:
                video.close()
        done = []
        for tmp, final in self.finals.items():
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(tmp, final)
            done.append(final)
        shutil.rmtree(self.work, ignore_errors=True)
        return done

    def abort(self) -> None:
        """Close and remove everything written so far."""
        try:
            self._csv_file.close()
            for video in (self.mask_video, self.overlay_video):
                if video:
                    video.close(flush=False)
        except Exception:  # noqa: BLE001, S110 - the files are removed anyway
            pass
        shutil.rmtree(self.work, ignore_errors=True)


def check_video_options(options: VideoOptions) -> None:
    """Refuse option values that make no sense.

    Raises:
        EdgesegError: For a negative ``png_every``.
    """
    if options.png_every < 0:
        raise EdgesegError(f"png_every must be 0 (none) or a positive number, got {options.png_every}")
