"""Frames through a model: a Python iterator over ``(frame, mask, fractions)``.

A decoder thread reads the source while the model predicts. From a file every frame is
predicted, in order, as fast as the model allows (the decoder waits when it is ahead). From a
live source the decoder never waits: it keeps only the newest frame, and a frame that arrives
before the model took the previous one replaces it and is counted as skipped, so the model
never falls behind the camera and memory holds at most two frames whatever the rates.

A live source that fails after its first frame (a camera unplugged, a server that closes the
connection) ends the iteration as its end would: the frames so far are kept and
:attr:`VideoFrames.ended_early` says why. A source without any frame is an error.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from firmware_bridge.errors import EdgesegError
from firmware_bridge.video.source import VideoSource

FILE_QUEUE = 4
"""Decoded frames waiting for the model when reading a file."""


@dataclass
class FrameResult:
    """One predicted frame.

    Attributes:
        index: Frame number in the source (0-based; counts skipped frames too).
        time_s: Presentation time in seconds.
        image: ``HxWx3`` uint8 RGB frame.
        mask: ``HxW`` uint8 classes (255 where the frame has no data).
        fractions: Share of the frame's pixels in each class.
        inference_ms: Time the model took for this frame (all its tiles).
        skipped: Frame numbers dropped since the previous result (live sources).
    """

    index: int
    time_s: float
    image: np.ndarray
    mask: np.ndarray
    fractions: np.ndarray
    inference_ms: float
    skipped: list[int] = field(default_factory=list)


@dataclass
class _Decoded:
    index: int
    time_s: float
    image: np.ndarray
    skipped: list[int]


_END = object()


class _Decoder(threading.Thread):
    """Decodes frames into a queue: blocking for files, newest-wins for live sources."""

    def __init__(self, source: VideoSource, max_frames: int | None) -> None:
        super().__init__(name="edgeseg-decode", daemon=True)
        self.container, self.stream = source.open()
        self.live, self.max_frames = source.live, max_frames
        self.frames: queue.Queue = queue.Queue(maxsize=1 if self.live else FILE_QUEUE)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.ended_early = ""
        self.decoded = 0
        self.source = source
        self._lock = threading.Lock()
        self._skipped: list[int] = []
        self._closed = False

    @property
    def rate(self) -> float:
        """Frames per second of the source (25 when it does not say)."""
        rate = self.stream.average_rate or self.stream.guessed_rate
        return float(rate) if rate else 25.0

    def run(self) -> None:
        av = __import__("av")
        try:
            for index, frame in enumerate(self.container.decode(self.stream)):
                if self.stop.is_set() or (self.max_frames and index >= self.max_frames):
                    break
                t = float(frame.time) if frame.time is not None else index / self.rate
                item = _Decoded(index, t, frame.to_ndarray(format="rgb24"), [])
                self.decoded += 1
                if self.live:
                    self._put_newest(item)
                else:
                    while not self.stop.is_set():
                        try:
                            self.frames.put(item, timeout=0.1)
                            break
                        except queue.Full:
                            continue
        except av.error.FFmpegError as exc:
            if self.live and self.decoded:  # a camera unplugged, a server gone: keep the frames
                self.ended_early = getattr(exc, "strerror", None) or str(exc)
            else:
                self.error = EdgesegError(f"{self.source.spec}: decoding failed ({exc})")
        except BaseException as exc:  # noqa: BLE001 - handed to the consuming thread
            self.error = exc
        finally:
            self._put_end()

    def _put_newest(self, item: _Decoded) -> None:
        with self._lock:
            try:
                old = self.frames.get_nowait()
                if old is not _END:
                    self._skipped.append(old.index)
                    self._skipped.extend(old.skipped)
            except queue.Empty:
                pass
            item.skipped = sorted(self._skipped)
            self._skipped.clear()
            self.frames.put_nowait(item)

    def _put_end(self) -> None:
        while True:
            try:
                self.frames.put(_END, timeout=0.1)
                return
            except queue.Full:
                if self.stop.is_set():  # nobody takes the frames any more
                    try:
                        self.frames.get_nowait()
                    except queue.Empty:
                        pass

    def close(self) -> None:
        self.stop.set()
        while self.is_alive():
            try:
                self.frames.get(timeout=0.05)
            except queue.Empty:
                pass
        if not self._closed:
            self._closed = True
            self.container.close()


class VideoFrames:
    """Predicted frames of one source, as an iterator; also knows the source's rate and size.

    Args:
        segmenter: A :class:`~firmware_bridge.runtime.segmenter.Segmenter`; frames larger than
            its input are tiled.
        source: A :class:`VideoSource` or what the user gave (path, camera, URL).
        max_frames: Stop after this many source frames (``None``: at the end of the source).

    Raises:
        EdgesegError: For a source that cannot be opened (when constructed), or decoded (a
            live source only before its first frame), holds no frame, or frames the model
            cannot take (while iterating; the message names the source).
    """

    def __init__(self, segmenter, source: str | VideoSource, max_frames: int | None = None) -> None:
        self.segmenter = segmenter
        self.source = source if isinstance(source, VideoSource) else VideoSource.parse(str(source))
        self._decoder = _Decoder(self.source, max_frames)
        self.rate = self._decoder.rate
        self.size = (self._decoder.stream.height, self._decoder.stream.width)

    def __iter__(self) -> Iterator[FrameResult]:
        from firmware_bridge.serve.protocol import class_fractions

        decoder, seg = self._decoder, self.segmenter
        decoder.start()
        try:
            while True:
                item = decoder.frames.get()
                if item is _END:
                    if decoder.error is not None:
                        raise decoder.error
                    if not decoder.decoded:
                        raise EdgesegError(f"{self.source.spec}: has no video frames")
                    return
                start = time.perf_counter()
                try:
                    mask = seg.predict_tiled(item.image).mask
                except EdgesegError as exc:
                    raise EdgesegError(f"{self.source.spec}: frame {item.index}: {exc}") from None
                elapsed = (time.perf_counter() - start) * 1e3
                yield FrameResult(item.index, item.time_s, item.image, mask,
                                  class_fractions(mask, seg.num_classes), elapsed, item.skipped)
        finally:
            decoder.close()

    @property
    def ended_early(self) -> str:
        """Why a live source stopped sending frames (``""``: it did not, or is a file)."""
        return self._decoder.ended_early

    def close(self) -> None:
        """Stop decoding and close the source (when iteration did not reach the end)."""
        self._decoder.close()


def segment_video(segmenter, source: str | VideoSource, max_frames: int | None = None
                  ) -> Iterator[FrameResult]:
    """Predict every frame of a file, or the newest frames of a live source (see :class:`VideoFrames`).

    Yields:
        One :class:`FrameResult` per predicted frame, in order.
    """
    yield from VideoFrames(segmenter, source, max_frames)
