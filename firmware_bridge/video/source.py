"""Video sources: a file, a camera or a network stream, opened with PyAV (the ``[video]`` extra).

A source is *live* when frames arrive at the camera's pace whether or not anyone reads them (a
camera, an RTSP/UDP/HTTP stream); a file is read as fast as it can be predicted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from firmware_bridge.errors import EdgesegError, require

VIDEO_SUFFIXES = (".mp4", ".mkv", ".avi", ".mov", ".webm", ".m4v", ".ts", ".mpg", ".mpeg")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "udp://", "tcp://", "srt://", "http://",
                  "https://")
CAMERA = re.compile(r"^(/dev/video\d+|\d+)$")


@dataclass(frozen=True)
class VideoSource:
    """Where frames come from.

    Attributes:
        spec: What the user gave: a path, ``/dev/videoN`` or ``N``, or a URL.
        kind: ``"file"``, ``"camera"`` or ``"stream"``.
        stem: Name stem of the outputs (``<stem>_frames.csv`` ...).
    """

    spec: str
    kind: str
    stem: str

    @property
    def live(self) -> bool:
        """Frames come at the source's pace: never fall behind, drop instead."""
        return self.kind != "file"

    @classmethod
    def parse(cls, spec: str) -> VideoSource:
        """Classify a source given on the command line."""
        if spec.lower().startswith(STREAM_SCHEMES):
            return cls(spec, "stream", "stream")
        if CAMERA.match(spec):
            device = spec if spec.startswith("/dev/") else f"/dev/video{spec}"
            return cls(device, "camera", Path(device).name)
        return cls(spec, "file", Path(spec).stem)

    def open(self):
        """Open the container with PyAV; returns ``(container, video_stream)``.

        Raises:
            EdgesegError: For a missing file, a file that is not a video, a camera or stream
                that cannot be opened, or a container without a video stream or frames.
            MissingDependencyError: Without PyAV (``pip install 'edgeseg[video]'``).
        """
        av = require("av", "video")
        options: dict[str, str] = {}
        fmt = None
        if self.kind == "file" and not Path(self.spec).is_file():
            raise EdgesegError(f"{self.spec}: no such file")
        if self.kind == "camera":
            fmt = "v4l2"
        if self.spec.lower().startswith("rtsp"):
            options["rtsp_transport"] = "tcp"
        try:
            container = av.open(self.spec, format=fmt, options=options, timeout=10.0)
        except av.error.EOFError as exc:  # a valid header and nothing after it
            raise EdgesegError(f"{self.spec}: has no video frames") from exc
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            what = {"file": "not a readable video", "camera": "cannot open the camera",
                    "stream": "cannot open the stream"}[self.kind]
            raise EdgesegError(f"{self.spec}: {what} ({exc})") from exc
        if not container.streams.video:
            container.close()
            raise EdgesegError(f"{self.spec}: holds no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # let FFmpeg decode with its own threads
        return container, stream


def is_video_source(spec: str) -> bool:
    """Whether ``predict`` should treat an input as a video source."""
    return (spec.lower().startswith(STREAM_SCHEMES) or bool(CAMERA.match(spec))
            or Path(spec).suffix.lower() in VIDEO_SUFFIXES)
