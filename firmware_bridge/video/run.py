"""``predict_video``: one video source through a model into a folder of outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.video.frames import VideoFrames
from firmware_bridge.video.outputs import VideoOptions, VideoOutputs, check_video_options
from firmware_bridge.video.source import VideoSource


@dataclass
class VideoReport:
    """What :func:`predict_video` did.

    Attributes:
        files: The files written (the CSV first).
        predicted: Frames predicted.
        skipped: Frames of a live source dropped because the model was busy.
        seconds: Wall time from the first frame to the last.
        ended_early: Why a live source stopped before it was stopped (``""``: it did not);
            the outputs hold the frames predicted until then.
    """

    files: list[Path] = field(default_factory=list)
    predicted: int = 0
    skipped: int = 0
    seconds: float = 0.0
    ended_early: str = ""

    @property
    def fps(self) -> float:
        """Predicted frames per second."""
        return self.predicted / self.seconds if self.seconds > 0 else 0.0


def predict_video(segmenter, source: str | VideoSource, out_dir: str | Path,
                  options: VideoOptions | None = None, max_frames: int | None = None,
                  show_progress: bool = False) -> VideoReport:
    """Predict a video file, a camera or a stream into ``out_dir``.

    Args:
        segmenter: The model (:class:`~firmware_bridge.runtime.segmenter.Segmenter`).
        source: Path, ``/dev/videoN`` or camera index, or stream URL.
        out_dir: Existing output folder.
        options: Which outputs besides the per-frame CSV.
        max_frames: Stop after this many source frames (a live source runs until stopped).
        show_progress: A progress bar (over the file's frames when it says how many).

    Returns:
        The report.

    Raises:
        EdgesegError: For a source that cannot be opened or decoded (a live source that
            fails after its first frame ends the run instead, see
            :attr:`VideoReport.ended_early`), holds no frame, frames the model cannot take,
            or an output that cannot be written (the message names it); nothing is left in
            ``out_dir``.
    """
    from firmware_bridge.io.raster import class_table, clear_background
    from firmware_bridge.progress import progress

    options = options or VideoOptions()
    check_video_options(options)
    frames = VideoFrames(segmenter, source, max_frames)
    outputs = None
    try:
        outputs = VideoOutputs(Path(out_dir), frames.source.stem, class_table(segmenter),
                               frames.rate, frames.size, options, clear_background(segmenter))
        total = frames._decoder.stream.frames or None
        report = VideoReport()
        start = time.perf_counter()
        for result in progress(frames, total, frames.source.stem, show_progress, "frame"):
            outputs.add(result)
            report.predicted += 1
            report.skipped += len(result.skipped)
        report.seconds = time.perf_counter() - start
        report.ended_early = frames.ended_early
        report.files = outputs.finish()
        outputs = None
        return report
    finally:
        if outputs is not None:
            outputs.abort()
        frames.close()
