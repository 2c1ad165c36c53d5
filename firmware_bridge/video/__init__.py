"""Video files, cameras and network streams through a model (the ``[video]`` extra: PyAV).

* :mod:`~firmware_bridge.video.source` -- a file, ``/dev/videoN`` or a URL, opened with PyAV;
* :mod:`~firmware_bridge.video.frames` -- :class:`VideoFrames`, an iterator over predicted
  frames that never falls behind a live source (it drops frames and says which);
* :mod:`~firmware_bridge.video.outputs` -- the per-frame CSV, mask and overlay videos, PNGs;
* :mod:`~firmware_bridge.video.run` -- :func:`predict_video`, what ``edgeseg-run predict`` does
  with a video source.
"""

from firmware_bridge.video.frames import FrameResult, VideoFrames, segment_video
from firmware_bridge.video.outputs import VideoOptions
from firmware_bridge.video.run import VideoReport, predict_video
from firmware_bridge.video.source import VideoSource, is_video_source

__all__ = ["FrameResult", "VideoFrames", "VideoOptions", "VideoReport", "VideoSource",
           "is_video_source", "predict_video", "segment_video"]
