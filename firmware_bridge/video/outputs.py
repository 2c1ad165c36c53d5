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
  The folder is created when missing; when it exists, PNGs of the same name are replaced and
  every other file in it is kept (a rerun never deletes what it did not write).

A write that fails (a full disk, a quota, a read-only file system) ends in one line naming
the output file, and nothing of the run is left.
"""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from firmware_bridge.errors import EdgesegError, require
from firmware_bridge.fsutil import writing
from firmware_bridge.io.classes import ClassTable
from firmware_bridge.io.images import mask_image, overlay
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
    """One output video written frame by frame; its errors name its final file."""

    def __init__(self, path: Path, final: Path, codec: str, rate: float, size: tuple[int, int],
                 pix_fmt: str, options: dict | None = None) -> None:
        av = require("av", "video")
        self.av, self.final = av, final
        with writing(final):
            self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream(codec, rate=Fraction(rate).limit_denominator(1001))
        self.stream.height, self.stream.width = size
        self.stream.pix_fmt = pix_fmt
        if options:
            self.stream.options = options

    def write(self, array: np.ndarray, fmt: str) -> None:
        frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format=fmt)
        with writing(self.final):
            for packet in self.stream.encode(frame):
                self.container.mux(packet)

    def close(self, flush: bool = True) -> None:
        with writing(self.final):
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
        clear_background: Leave class 0 untinted in the overlay video (a model that gives it
            no colour: :func:`firmware_bridge.io.raster.clear_background`).

    Raises:
        EdgesegError: When an output name is taken by something that is not replaced (a
            folder where a file goes, a file where the PNG folder goes), or a file cannot be
            written (the message names the file; nothing is left behind).
    """

    def __init__(self, out_dir: Path, stem: str, table: ClassTable, rate: float,
                 size: tuple[int, int], options: VideoOptions,
                 clear_background: bool = False) -> None:
        self.out_dir, self.stem, self.table, self.options = Path(out_dir), stem, table, options
        self.clear_background = clear_background
        self.csv_path = self.out_dir / f"{stem}_frames.csv"
        self.masks_dir = self.out_dir / f"{stem}_masks"
        files = {"frames.csv": self.csv_path}
        if options.mask_video:
            files["mask.mkv"] = self.out_dir / f"{stem}_mask.mkv"
        if options.overlay_video:
            files["overlay.mp4"] = self.out_dir / f"{stem}_overlay.mp4"
        _check_names(list(files.values()), self.masks_dir if options.png_every else None)
        with writing(self.out_dir):
            self.work = Path(tempfile.mkdtemp(prefix=f".{stem}.", suffix=".part", dir=self.out_dir))
        self.finals = {self.work / name: final for name, final in files.items()}
        self.colours = table.palette()
        self.mask_video = self.overlay_video = None
        self._csv_file = None
        self.predicted = 0
        try:
            self._open(files, rate, size)
        except BaseException:
            self.abort()
            raise

    def _open(self, files: dict[str, Path], rate: float, size: tuple[int, int]) -> None:
        with writing(self.csv_path):
            self._csv_file = (self.work / "frames.csv").open("w", newline="")
            self.csv = csv.writer(self._csv_file)
            self.csv.writerow(["frame", "time_s", "status", "inference_ms",
                               *[f"fraction_{n}" for n in self.table.names], "fraction_nodata"])
        h, w = size
        even = (h - h % 2, w - w % 2)  # 4:2:0 video needs even sides
        if self.options.mask_video:
            self.mask_video = _Video(self.work / "mask.mkv", files["mask.mkv"], "ffv1", rate,
                                     size, "gray")
        if self.options.overlay_video:
            self.overlay_video = _Video(self.work / "overlay.mp4", files["overlay.mp4"], "mpeg4",
                                        rate, even, "yuv420p", {"qscale": "3"})
        if self.options.png_every:
            with writing(self.masks_dir):
                (self.work / "masks").mkdir()

    def add(self, result: FrameResult) -> None:
        """Record one predicted frame (and the frames skipped before it).

        Raises:
            EdgesegError: When a file cannot be written (the message names it).
        """
        nodata = 1.0 - float(result.fractions.sum())
        with writing(self.csv_path):
            for index in result.skipped:
                self.csv.writerow([index, "", "skipped", "", *[""] * len(self.table.names), ""])
            self.csv.writerow([result.index, f"{result.time_s:.4f}", "predicted",
                               f"{result.inference_ms:.2f}", *[f"{v:.6f}" for v in result.fractions],
                               f"{max(nodata, 0.0):.6f}"])
        if self.mask_video:
            self.mask_video.write(result.mask, "gray")
        if self.overlay_video:
            h, w = result.mask.shape
            clear = result.mask == 0 if self.clear_background else None
            blend = overlay(result.image, self.table.colourise(result.mask), clear=clear)
            self.overlay_video.write(blend[: h - h % 2, : w - w % 2], "rgb24")
        if self.options.png_every and self.predicted % self.options.png_every == 0:
            name = f"{result.index:06d}_mask.png"
            with writing(self.masks_dir / name):
                mask_image(result.mask, self.colours).save(self.work / "masks" / name, format="PNG")
        self.predicted += 1

    def finish(self) -> list[Path]:
        """Close every file and move it to its final name; returns the final paths.

        The PNG masks go into ``<stem>_masks/``: a PNG of the same name there is replaced,
        every other file in that folder is kept.

        Raises:
            EdgesegError: When a file cannot be written or moved (the message names it).
        """
        with writing(self.csv_path):
            self._csv_file.close()
        for video in (self.mask_video, self.overlay_video):
            if video:
                video.close()
        done = []
        for tmp, final in self.finals.items():
            with writing(final):
                os.replace(tmp, final)
            done.append(final)
        if self.options.png_every:
            with writing(self.masks_dir):
                if self.masks_dir.is_dir():
                    for png in sorted((self.work / "masks").iterdir()):
                        os.replace(png, self.masks_dir / png.name)
                else:
                    os.replace(self.work / "masks", self.masks_dir)
            done.append(self.masks_dir)
        shutil.rmtree(self.work, ignore_errors=True)
        return done

    def abort(self) -> None:
        """Close and remove everything written so far (nothing outside the temporary folder)."""
        for video in (self.mask_video, self.overlay_video):
            if video:
                with contextlib.suppress(Exception):  # the files are removed anyway
                    video.close(flush=False)
        if self._csv_file is not None:
            with contextlib.suppress(OSError):
                self._csv_file.close()
        shutil.rmtree(self.work, ignore_errors=True)


def _check_names(files: list[Path], masks_dir: Path | None) -> None:
    """Refuse, before any work, output names held by something that must not be replaced.

    Raises:
        EdgesegError: For a folder (or a device) where an output file goes, or anything but
            a folder where the PNG masks go.
    """
    for final in files:
        if final.exists() and not final.is_file():
            raise EdgesegError(f"{final}: exists and is not a regular file (a folder or a "
                               "device): move it away or predict into another --out")
    if masks_dir is not None and masks_dir.exists() and not masks_dir.is_dir():
        raise EdgesegError(f"{masks_dir}: exists and is not a folder (--png-every writes the "
                           "PNG masks into a folder of that name): move it away or predict "
                           "into another --out")


def check_video_options(options: VideoOptions) -> None:
    """Refuse option values that make no sense.

    Raises:
        EdgesegError: For a negative ``png_every``.
    """
    if options.png_every < 0:
        raise EdgesegError(f"png_every must be 0 (none) or a positive number, got {options.png_every}")
