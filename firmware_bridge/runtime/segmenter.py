"""``Segmenter``: any segmentation model on any backend, whole-image or tiled.

The path of one batch: pixels ``(N, H, W, C)`` -> ``(x * scale - mean) / std`` -> quantise with the
input's scale and zero point (integer models) -> NCHW if the model wants it -> backend ->
dequantise -> NHWC -> scores -> resized to the input size if the model outputs a smaller map.
Scores are what the model gives: probabilities (softmax, sigmoid and multilabel outputs) or
logits (logit outputs), blended across tiles as they are and turned into probabilities only
when those are asked for (:mod:`firmware_bridge.runtime.postprocess`). The mask is the argmax;
``p >= threshold`` for one sigmoid channel; for a multilabel output (independent sigmoid
channels, no background channel) ``1 + c`` for the class ``c`` of highest score among those at
or above their threshold, and 0 (``none``) where no class reaches its threshold.

Images of another size than the model's are tiled (``resize="tile"``), or resized to the
model's input, predicted once and mapped back (``"fit"``, ``"stretch"``:
:mod:`firmware_bridge.runtime.resize`).

Pixels without data (NaN, infinite, or the raster's nodata value in every band) are filled
before the model sees them and get the ignore value 255 in the mask
(:mod:`firmware_bridge.runtime.nodata`).
"""

from __future__ import annotations

import copy
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError
from firmware_bridge.runtime import quantize, resize, tiling
from firmware_bridge.runtime.backends import KERNELS, Backend, BackendOptions, open_backend
from firmware_bridge.runtime.metadata import (
    MULTILABEL_KINDS,
    RESIZE_BACKS,
    RESIZE_FILTERS,
    RESIZE_MODES,
    ModelMetadata,
    check_normalisation,
)
from firmware_bridge.runtime.modelspec import input_channels, output_channels, resolve_model
from firmware_bridge.runtime.nodata import fill_invalid, invalid_pixels
from firmware_bridge.runtime.overlap import OverlapSums
from firmware_bridge.runtime.pipeline import run_ahead
from firmware_bridge.runtime.postprocess import (
    LOGIT_KINDS,
    logit,
    multilabel_mask,
    resize_bilinear,
    to_probabilities,
)
from firmware_bridge.runtime.stages import StageClock
from firmware_bridge.runtime.standardise import BandStats, band_statistics

DEFAULT_TILE = 512
NONE_CLASS = "none"
"""Name of label 0 of a multilabel model's mask: no class reached its threshold."""
TTA_FLIPS = {"none": [(1, 1)], "flips": [(1, 1), (1, -1), (-1, 1)]}
"""Test-time augmentation: (row step, column step) of each view of a tile (-1 mirrors)."""


@dataclass
class SegmenterOptions:
    """Runtime options, and overrides for models that carry no (or wrong) metadata.

    Attributes:
        threads: CPU threads for the backend.
        device: OpenVINO device (CPU, GPU, NPU, AUTO).
        providers: ONNX Runtime execution providers, highest priority first.
        delegate: LiteRT external delegate library.
        kernels: ``"reference"``: LiteRT's reference kernels, TensorFlow Lite Micro's rounding
            (a microcontroller's masks exactly; other backends refuse it); ``None`` or
            ``"default"``: the backend's own kernels.
        tile: Tile edge for tiled inference; fixed-size models use their input size.
        resize: How images of another size meet the model: ``"tile"``, ``"fit"`` (resized,
            aspect ratio kept, padded) or ``"stretch"`` (resized to the input)
            (:mod:`firmware_bridge.runtime.resize`); ``None``: the model's recommendation,
            else ``"tile"``.
        resize_filter: How ``fit`` and ``stretch`` resize the pixels: ``"antialias"`` (Pillow's
            antialiased bilinear) or ``"bilinear"`` (OpenCV's ``INTER_LINEAR``, as many
            publishers' demos resize).
        resize_back: What ``fit`` and ``stretch`` resize back to the image: ``"scores"``
            (bilinearly, before the argmax or thresholds) or ``"mask"`` (the finished mask, by
            nearest neighbour as OpenCV's ``INTER_NEAREST``).
        overlap: Tile overlap in pixels (``None``: the metadata's, 32 by default).
        batch: Tiles per backend call.
        min_size: Smallest image side accepted (smaller images hold too little context).
        mean: Per-channel mean subtracted from the (scaled) pixels; finite.
        std: Per-channel divisor; finite and above 0.
        scale: Multiplier applied to the pixels first: the input is
            ``(pixel * scale - mean) / std``.
        layout: ``"NHWC"`` or ``"NCHW"``.
        classes: Class names in output-channel order.
        threshold: Sigmoid threshold (of every class, for a multilabel output).
        class_thresholds: One threshold per output channel of a multilabel output (instead of
            ``threshold``).
        output: ``"softmax"``, ``"logits"``, ``"sigmoid"``, ``"multilabel"`` or
            ``"multilabel-logits"``.
        pipeline: Run the model on its own thread, one batch ahead of the preparation and
            blending of tiles (:mod:`firmware_bridge.runtime.pipeline`); the masks are the
            same either way.
        tta: Test-time augmentation: ``"flips"`` also predicts every tile mirrored left-right
            and top-bottom and averages the three (3x the inference); ``None``: none.
        integer_blend: For a model with 8-bit softmax output, blend the integer scores in
            16-bit integers and take the mask's argmax there, without dequantising
            (:meth:`Segmenter.integer_masks`); the window is rounded to integer weights, so
            masks may differ from the float blend where tiles overlap and classes nearly tie.
    """

    threads: int | None = None
    device: str | None = None
    providers: tuple[str, ...] | None = None
    delegate: str | None = None
    tile: int | None = None
    resize: str | None = None
    resize_filter: str = RESIZE_FILTERS[0]
    resize_back: str = RESIZE_BACKS[0]
    overlap: int | None = None
    batch: int = 1
    min_size: int = 16
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float | None = None
    layout: str | None = None
    classes: list[str] | None = None
    threshold: float | None = None
    class_thresholds: list[float] | None = None
    output: str | None = None
    pipeline: bool = True
    tta: str | None = None
    integer_blend: bool = True
    kernels: str | None = None

    def __post_init__(self) -> None:
        if self.kernels is not None and self.kernels not in KERNELS:
            raise EdgesegError(f"kernels must be one of {', '.join(KERNELS)}, got {self.kernels!r}")
        if self.threads is not None and self.threads < 1:
            raise EdgesegError(f"threads must be at least 1, got {self.threads} (leave it out for the "
                      "runtime's default)")
        if self.tile is not None and self.tile < 1:
            raise EdgesegError(f"tile must be a positive number of pixels, got {self.tile}")
        if self.overlap is not None and self.overlap < 0:
            raise EdgesegError(f"overlap must be 0 or more pixels, got {self.overlap}")
        if self.batch < 1:
            raise EdgesegError(f"batch must be at least 1, got {self.batch}")
        for t in [self.threshold, *(self.class_thresholds or [])]:
            if t is not None and not 0 < t < 1:
                raise EdgesegError(f"threshold must lie between 0 and 1 (a probability), got {t}")
        if self.class_thresholds is not None and not self.class_thresholds:
            raise EdgesegError("class_thresholds: give one threshold per class")
        if self.resize is not None and self.resize not in RESIZE_MODES:
            raise EdgesegError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        for name, choices in (("resize_filter", RESIZE_FILTERS), ("resize_back", RESIZE_BACKS)):
            if getattr(self, name) not in choices:
                raise EdgesegError(f"{name} must be one of {', '.join(choices)}, got "
                                   f"{getattr(self, name)!r}")
        if self.scale is not None and (self.scale <= 0 or not np.isfinite(self.scale)):
            raise EdgesegError(f"scale must be a positive number, got {self.scale}")
        if self.mean is not None:
            self.mean = check_normalisation(self.mean, [1.0])[0]
        if self.std is not None:
            self.std = check_normalisation([0.0], self.std)[1]
        if self.tta is not None and self.tta not in TTA_FLIPS:
            raise EdgesegError(f"tta must be one of {', '.join(TTA_FLIPS)}, got {self.tta!r}")
        if self.layout is not None:
            self.layout = self.layout.upper()
            if self.layout not in ("NHWC", "NCHW"):
                raise EdgesegError(f"layout must be NHWC or NCHW, got {self.layout!r}")
        if self.classes is not None:
            if not self.classes:
                raise EdgesegError("classes: give at least one class name")
            dupes = sorted({n for n in self.classes if self.classes.count(n) > 1})
            if dupes:
                raise EdgesegError(f"classes: {', '.join(dupes)} named twice; every class needs its own name")


@dataclass
class SegResult:
    """A prediction.

    Attributes:
        mask: ``HxW`` uint8 classes, 255 where the image has no data.
        probabilities: ``HxWxK`` float32 when asked for.
        nodata: Pixels without data (NaN, infinite or the nodata value), 255 in the mask.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None = None
    nodata: int = 0


@dataclass
class Band:
    """Partial blended sums of the rows just below a region, for the region beneath it.

    Attributes:
        acc: ``rows x width x K`` sum of window-weighted scores: float32, or uint16 when
            8-bit scores are blended in integers (:meth:`Segmenter.integer_masks`).
        wsum: ``rows x width`` sum of the windows, of the same type.
    """

    acc: np.ndarray
    wsum: np.ndarray


@dataclass
class TileBand:
    """The scores of the tiles that reach below a row of blocks, over the rows they reach.

    What one block hands the block beneath it in one process: where a :class:`Band` holds
    16-bit (or float) sums and their weights across the width, this holds the tiles' own scores
    (8-bit for integer blending), about half the memory; the block beneath adds them first, in
    the order of the tile grid, so every pixel's sum is the same.

    Attributes:
        y0: The first row handed down.
        tiles: Tile -> its scores over rows ``[y0, tile.y1)``, in the order of the tile grid.
    """

    y0: int
    tiles: dict[tiling.Box, np.ndarray]


def _core(box: tiling.Box, region: tiling.Box, rows_once: np.ndarray, cols_once: np.ndarray
          ) -> tiling.Box | None:
    """The part of ``region`` that ``box`` alone covers (rows and columns covered once), if any."""
    y0, y1 = max(box.y0, region.y0), min(box.y1, region.y1)
    x0, x1 = max(box.x0, region.x0), min(box.x1, region.x1)
    ys = np.flatnonzero(rows_once[y0 - region.y0 : y1 - region.y0])
    xs = np.flatnonzero(cols_once[x0 - region.x0 : x1 - region.x0])
    if not len(ys) or not len(xs):
        return None
    return tiling.Box(y0 + int(ys[0]), x0 + int(xs[0]), y0 + int(ys[-1]) + 1, x0 + int(xs[-1]) + 1)


def _frame(box: tiling.Box, core: tiling.Box) -> list[tiling.Box]:
    """``box`` less ``core`` (a box inside it), as up to four non-overlapping boxes."""
    parts = [tiling.Box(box.y0, box.x0, core.y0, box.x1), tiling.Box(core.y1, box.x0, box.y1, box.x1),
             tiling.Box(core.y0, box.x0, core.y1, core.x0), tiling.Box(core.y0, core.x1, core.y1, box.x1)]
    return [p for p in parts if p.height > 0 and p.width > 0]


class Segmenter:
    """A segmentation model ready to predict.

    Args:
        path: ``.tflite``, ``.xml`` or ``.onnx`` model.
        backend: Backend name; ``None`` picks it from the suffix.
        options: Runtime options and foreign-model overrides.
        runtime: An opened :class:`~firmware_bridge.runtime.backends.Backend` to use instead of
            opening ``path`` (see :meth:`of`).
        metadata: The metadata of ``runtime``'s model (``None``: read from ``path``).

    Attributes:
        backend: The loaded :class:`~firmware_bridge.runtime.backends.Backend`.
        meta: Metadata in effect (the file's, with the options' overrides on top).
        resize: How images of another size meet the model: ``"tile"``, ``"fit"`` or
            ``"stretch"`` (the options', else the metadata's, else ``"tile"``).
        assumed: The defaults in ``meta`` that neither the model's metadata nor the options
            gave (:class:`~firmware_bridge.runtime.modelspec.Assumed`; empty for an edgeseg
            model); the commands print them in one line.

    Raises:
        EdgesegError: For unreadable models, unavailable backends, or inconsistent options.
    """

    def __init__(self, path: str | Path, backend: str | None = None,
                 options: SegmenterOptions | None = None, *, runtime: Backend | None = None,
                 metadata: ModelMetadata | None = None) -> None:
        self.options = opts = options or SegmenterOptions()
        self._worker: ThreadPoolExecutor | None = None
        bopts = BackendOptions(opts.threads, opts.device,
                               tuple(opts.providers) if opts.providers else None, opts.delegate,
                               kernels=opts.kernels)
        self.backend = runtime or open_backend(path, backend, bopts)
        self.meta, self.assumed = resolve_model(Path(path), self.backend, opts, metadata)
        self._none_name = NONE_CLASS
        self._cutoffs = self._resolve_thresholds()
        self.resize = opts.resize or self.meta.resize or "tile"
        if self.resize == "tile" and (opts.resize_filter, opts.resize_back) != (
                RESIZE_FILTERS[0], RESIZE_BACKS[0]):
            raise EdgesegError("--resize-filter and --resize-back are for images resized to the "
                               "model's input (--resize fit or --resize stretch), not for tiles")
        shape = self.backend.input.shape
        nchw = self.meta.layout == "NCHW"
        hw = shape[2:4] if nchw else shape[1:3]
        self.input_size = None if None in hw else (int(hw[0]), int(hw[1]))
        self.channels = int(input_channels(shape, self.meta.layout) or self.meta.channels)
        self._mean = np.asarray(self.meta.mean, dtype=np.float32)
        self._std = np.asarray(self.meta.std, dtype=np.float32)
        self._scale = np.float32(self.meta.scale)
        self._in_table: np.ndarray | None = None  # normalised value of every 8-bit pixel
        self._scene_set = False  # the normalisation of one scene is set (for_scene)
        self._out_buf: np.ndarray | None = None  # dequantized scores, reused between batches
        self.clock: StageClock | None = None  # per-stage times of tiled inference, when set
        self._int_blend: bool | None = None  # masks from 8-bit scores (integer_masks)
        self.tile = self._tile_size()
        self.overlap = self.meta.tile_overlap if opts.overlap is None else opts.overlap
        if opts.overlap is None and self.overlap >= min(self.tile):
            self.overlap = min(self.tile) // 4  # a small fixed input: the default does not fit
        if not 0 <= self.overlap < min(self.tile):
            raise EdgesegError(f"overlap must be in [0, {min(self.tile)}) for tile {self.tile}, "
                               f"got {self.overlap}")

    @classmethod
    def of(cls, runtime: Backend, metadata: ModelMetadata,
           options: SegmenterOptions | None = None) -> Segmenter:
        """A Segmenter around an opened backend whose model is not a file (e.g. a Keras model).

        Args:
            runtime: The backend.
            metadata: Classes, normalisation, output kind, tiles of its model.
            options: Runtime options (tile, overlap, batch, overrides).

        Returns:
            The Segmenter.
        """
        return cls(runtime.path, options=options, runtime=runtime, metadata=metadata)

    def _tile_size(self) -> tuple[int, int]:
        tile = self.options.tile
        if self.input_size is not None:
            if tile is not None and (tile, tile) != self.input_size:
                raise EdgesegError(f"the model's input is fixed at {self.input_size}; tile "
                                   f"{tile} cannot be used (leave --tile out; --resize fit or "
                                   "--resize stretch predicts a whole image at once)")
            return self.input_size
        tile = tile or self.meta.tile_size or (self.meta.input_size or (DEFAULT_TILE,))[0]
        return (int(tile), int(tile))

    def _resolve_thresholds(self) -> np.ndarray:
        """The mask's thresholds, in the space the scores are blended in (logits or not).

        Also moves the name of label 0 out of a multilabel model's classes when they hold one
        name more than the output has channels.

        Returns:
            One cutoff per channel (multilabel), or one cutoff (one channel).

        Raises:
            EdgesegError: For per-class thresholds on a model that is not multilabel, or a
                count that differs from the output's channels.
        """
        opts, meta = self.options, self.meta
        k = output_channels(self.backend.output.shape, meta.layout)
        if self.multilabel and k is not None and len(meta.classes) == k + 1:
            self._none_name = meta.classes[0]
            self.meta = meta = dataclasses.replace(meta, classes=list(meta.classes[1:]))
        n = len(meta.classes)
        if self.multilabel and n + 1 > IGNORE_INDEX:
            raise EdgesegError(f"{n} multilabel classes: a uint8 mask holds at most "
                               f"{IGNORE_INDEX - 1} besides none")
        given = opts.class_thresholds
        if given is not None and len(given) > 1 and not self.multilabel:
            raise EdgesegError(f"{len(given)} thresholds: one per class applies to multilabel "
                               "outputs (--output-kind multilabel); give one threshold")
        if given is not None and len(given) not in (1, n):
            raise EdgesegError(f"{len(given)} thresholds for {n} classes: give one, or one per "
                               f"class ({', '.join(meta.classes)})")
        values = np.asarray(given if given is not None else [meta.threshold], np.float64)
        if self.multilabel:
            values = np.broadcast_to(values, (n,))
        cut = logit(values) if meta.output in LOGIT_KINDS else values
        return cut.astype(np.float32)

    @property
    def single_channel(self) -> bool:
        """True when the model gives one foreground probability (sigmoid or one logit)."""
        k = output_channels(self.backend.output.shape, self.meta.layout)
        return self.meta.output == "sigmoid" or (self.meta.output == "logits" and k == 1)

    @property
    def multilabel(self) -> bool:
        """True when every output channel is an independent sigmoid class (no background)."""
        return self.meta.output in MULTILABEL_KINDS

    @property
    def class_names(self) -> list[str]:
        """Names of the mask's values 0..K-1.

        ``background`` is added before one sigmoid class; a multilabel model's label 0 is
        ``none`` (no class reached its threshold) and its channel ``c`` is label ``c + 1``.
        """
        names = list(self.meta.classes)
        if self.multilabel:
            return [self._none_name, *names]
        return ["background", *names] if self.single_channel and len(names) == 1 else names

    @property
    def num_classes(self) -> int:
        """Classes the mask holds (2 for a single sigmoid channel)."""
        return len(self.class_names)

    def check_image(self, image: np.ndarray) -> None:
        """Refuse images the model cannot take.

        Raises:
            EdgesegError: For a wrong rank or band count, or a side under ``min_size``.
        """
        if image.ndim != 3:
            raise EdgesegError(f"image must be HxWxC, got shape {image.shape}")
        if image.shape[2] != self.channels:
            raise EdgesegError(f"image has {image.shape[2]} band(s), the model takes "
                               f"{self.channels}: select bands (--bands) or convert the image")
        if min(image.shape[:2]) < self.options.min_size:
            raise EdgesegError(f"image {image.shape[1]}x{image.shape[0]} is smaller than "
                               f"{self.options.min_size} px, too little for the model to see")

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Pixels ``(N, H, W, C)`` to the model's raw input tensor."""
        spec = self.backend.input
        if images.dtype == np.uint8:  # 256 values per band: one table lookup per pixel
            if self._in_table is None:
                self._in_table = quantize.input_table(self._scale, self._mean, self._std, spec,
                                                      images.shape[-1])
            x = quantize.apply_input_table(self._in_table, images)
        else:
            x = quantize.normalise(images, self._scale, self._mean, self._std, spec)
        return x.transpose(0, 3, 1, 2) if self.meta.layout == "NCHW" else x

    def scores(self, images: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, H, W, K)`` for a batch of pixels ``(N, H, W, C)``.

        Runs ``options.batch`` images per backend call. ``K`` is 1 for a sigmoid model.
        """
        step = self.options.batch
        raw = [self.backend.run(self.preprocess(images[i : i + step]))
               for i in range(0, len(images), step)]
        return self.probabilities(self.to_scores(np.concatenate(raw), images.shape[1],
                                                 images.shape[2]))

    def to_scores(self, raw: np.ndarray, height: int, width: int, reuse: bool = False
                  ) -> np.ndarray:
        """The backend's raw output of a batch to scores ``(N, height, width, K)``.

        The scores are the ones blended across tiles: probabilities, or logits for a logit
        output (:meth:`probabilities` turns them into probabilities, :meth:`to_mask` into
        the mask).

        Args:
            raw: The backend's output.
            height: Rows of the input (a smaller score map is resized to it).
            width: Columns of the input.
            reuse: Dequantize into a buffer kept for the next call (the caller is done with
                the scores before it asks again).
        """
        out = self.backend.output
        if out.quantized:
            buf = None
            if reuse:
                if self._out_buf is None or self._out_buf.shape != raw.shape:
                    self._out_buf = np.empty(raw.shape, np.float32)
                buf = self._out_buf
            y = quantize.dequantize(raw, out, buf)
        else:
            y = raw.astype(np.float32, copy=False)
        if y.ndim == 3:
            y = y[..., None]
        elif self.meta.layout == "NCHW":
            y = y.transpose(0, 2, 3, 1)
        return resize_bilinear(y, height, width)

    @property
    def logit_scores(self) -> bool:
        """True when the scores are logits (blended as such; see :meth:`to_scores`)."""
        return self.meta.output in LOGIT_KINDS

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Scores (:meth:`to_scores`, or blended) as probabilities.

        The scores themselves unless they are logits (softmax, or sigmoid per channel).

        Returns:
            ``...xK`` float32 probabilities.
        """
        return to_probabilities(scores, self.meta.output) if self.logit_scores else scores

    def to_mask(self, scores: np.ndarray) -> np.ndarray:
        """``...xK`` scores (:meth:`to_scores`, or blended) to a uint8 class mask.

        The argmax; a threshold for one channel; for a multilabel output, the label of the
        highest-scoring class among those at or above their threshold (0 where none is).
        """
        if self.multilabel:
            return multilabel_mask(scores, self._cutoffs)
        if scores.shape[-1] == 1:
            return (scores[..., 0] >= self._cutoffs[0]).astype(np.uint8)
        return np.argmax(scores, axis=-1).astype(np.uint8)

    def predict(self, image: np.ndarray, probabilities: bool = True) -> SegResult:
        """Predict one image of the model's input size (any size for dynamic models).

        Raises:
            EdgesegError: For a bad image or a size the fixed-size model does not take.
        """
        self.check_image(image)
        if self.per_image:
            return self.for_scene(self.image_statistics(image)).predict(image, probabilities)
        if self.input_size is not None and image.shape[:2] != self.input_size:
            raise EdgesegError(f"image is {image.shape[0]}x{image.shape[1]} but the model "
                               f"takes {self.input_size[0]}x{self.input_size[1]}: use "
                               "predict_tiled")
        image, invalid = self.clean(image)
        raw = self.backend.run(self.preprocess(image[None]))
        scores = self.to_scores(raw, image.shape[0], image.shape[1])[0]
        mask = self.to_mask(scores)
        if invalid is not None:
            mask[invalid] = IGNORE_INDEX
        return SegResult(mask, self.probabilities(scores) if probabilities else None,
                         0 if invalid is None else int(np.count_nonzero(invalid)))

    def predict_region(self, pixels: np.ndarray, origin: tuple[int, int],
                       image_size: tuple[int, int], region: tiling.Box,
                       shared: dict[tiling.Box, np.ndarray] | None = None) -> np.ndarray:
        """Blended probabilities of ``region`` of an image of ``image_size``.

        Args:
            pixels: Image part holding every tile that touches ``region``.
            origin: Full-image ``(row, col)`` of ``pixels[0, 0]``.
            image_size: Full image ``(height, width)``, at least one tile in both axes.
            region: Part to predict, in full-image coordinates.
            shared: Scores of tiles that the previous region of the same row predicted
                (box -> scores), read and then refilled with this region's tiles that reach
                past its right edge, so that the next region does not predict them again.
                ``None``: nothing kept. Give a new dict for each row of regions.

        Returns:
            ``region.height x region.width x K`` float32 probabilities, the same values that
            tiling the whole image gives there (tiles are added in the same order either way).
        """
        return self.probabilities(self.blend_region(pixels, origin, image_size, region, shared)[0])

    def blend_region(self, pixels: np.ndarray, origin: tuple[int, int],
                     image_size: tuple[int, int], region: tiling.Box,
                     shared: dict[tiling.Box, np.ndarray] | None = None,
                     above: Band | None = None, below: int = 0, mask: bool = False,
                     seam: list[tuple[tiling.Box, np.ndarray]] | None = None,
                     tiles_down: bool = False) -> tuple[np.ndarray, Band | TileBand | None]:
        """:meth:`predict_region`, handing the partial sums of the rows below to the next region.

        Only the overlap bands are summed: where one tile alone covers a pixel its window is
        1 and the blended score is the tile's score, taken (or its argmax, with ``mask``)
        straight from the tile.

        Args:
            pixels: Image part holding every tile that touches ``region`` (with ``above``:
                every such tile that starts at or below ``region.y0``).
            origin: Full-image ``(row, col)`` of ``pixels[0, 0]``.
            image_size: Full image ``(height, width)``, at least one tile in both axes.
            region: Part to predict, in full-image coordinates.
            shared: As :meth:`predict_region`.
            above: The band that the region just above handed down: the sums of every tile
                starting above ``region.y0`` (a :class:`Band` of the same columns), or their
                scores (a :class:`TileBand`); those tiles are not predicted again.
            below: Rows past ``region.y1`` to hand down (:func:`~firmware_bridge.runtime.tiling.rows_below`).
            mask: Return the ``uint8`` mask (:meth:`to_mask`) instead of the probabilities.
            seam: The band of the tiles starting above ``region.y0`` is blended elsewhere
                (another process predicts them): those tiles are left out as with ``above``,
                the result's rows in that band are provisional (this region's tiles alone),
                and each tile predicted here that reaches into the band appends ``(box, its
                scores over the band's rows)`` to this list, for :meth:`finish_band`. Tiles
                in ``shared`` are not appended again.
            tiles_down: Hand the ``below`` rows down as a :class:`TileBand` (the scores of the
                tiles reaching there) instead of a :class:`Band` of sums.

        Returns:
            ``(result, band)``: the region's blended scores (:meth:`to_scores`: the
            probabilities of :meth:`predict_region`, or their logits for a logit output; the
            same values as tiling the whole image: every pixel's sum is taken in the same
            order), or their mask; and the band of the ``below`` rows (``None`` when 0): a
            :class:`Band`, or with ``tiles_down`` a :class:`TileBand`.

        Raises:
            ValueError: When ``above`` does not fit the region (other columns, too few rows),
                or with ``seam``, when no tile starts in the region and probabilities or a
                band below are asked for.
        """
        h, w = image_size
        th, tw = self.tile
        boxes = tiling.boxes_touching(tiling.tile_boxes(h, w, self.tile, self.overlap), region)
        rows_once = tiling.covered_once(h, th, self.overlap)[region.y0 : region.y1].copy()
        cols_once = tiling.covered_once(w, tw, self.overlap)[region.x0 : region.x1]
        seam_end = region.y0
        if above is not None or seam is not None:
            reach = tiling.rows_below(boxes, region.y0)
            if isinstance(above, Band) and (above.acc.shape[1] != region.width
                                            or above.acc.shape[0] < min(reach, region.height)):
                raise ValueError(f"band {above.acc.shape[:2]} does not fit region {region} "
                                 f"(needs {reach} rows x {region.width})")
            boxes = [b for b in boxes if b.y0 >= region.y0]
            rows_once[:reach] = False  # summed partly above: finished from the sums
            if seam is not None:
                seam_end = region.y0 + reach
        known = shared if shared is not None else {}
        todo = [b for b in boxes if b not in known]
        top = (tiling.integer_weight_top(h, w, self.tile, self.overlap)
               if mask and self.integer_masks() else 0)
        integer = top >= tiling.INT_WEIGHT_MIN
        top = top if integer else 0
        computed = self._scored(todo, pixels, origin, integer)
        keep: dict[tiling.Box, np.ndarray] = {}
        summed_rows = np.concatenate([rows_once, np.zeros(below, bool)])
        sums: OverlapSums | None = None
        out: np.ndarray | None = None
        kind = np.uint16 if integer else np.float32
        origin_r = (region.y0, region.x0)

        def start(k: int) -> None:
            nonlocal sums, out
            sums = OverlapSums(summed_rows, cols_once, k, kind, origin_r)
            out = (np.empty((region.height, region.width), np.uint8) if mask
                   else np.empty((region.height, region.width, k), np.float32))

        handed: dict[tiling.Box, np.ndarray] = {}
        if isinstance(above, TileBand) and above.tiles:
            for box, sc in sorted(above.tiles.items()):
                if (sc.dtype == np.uint8) != integer:
                    raise ValueError(f"tile band of {sc.dtype} for a {np.dtype(kind)} blend")
                if sums is None:
                    start(sc.shape[-1])
                sums.add(sc, self._window(box, h, w, top)[above.y0 - box.y0 :],
                         tiling.Box(above.y0, box.x0, box.y1, box.x1))
                if tiles_down and box.y1 > region.y1:
                    handed[box] = sc[region.y1 - above.y0 :].copy()
        elif isinstance(above, Band):
            if above.acc.dtype != kind:
                raise ValueError(f"band of {above.acc.dtype} for a {np.dtype(kind)} blend")
            start(above.acc.shape[-1])
            n = min(above.acc.shape[0], len(summed_rows))
            sums.load(above.acc[:n], above.wsum[:n])
        clock = self.clock
        timed = {"blend": 0.0, "argmax": 0.0}
        try:
            for box in boxes:
                if box in known:
                    s, scratch = known[box], False
                else:
                    _, s = next(computed)  # ``todo`` keeps the order of ``boxes``
                    scratch = not integer
                    if shared is not None and box.x1 > region.x1:
                        keep[box] = s.copy()
                    if seam is not None and box.y0 < seam_end:
                        seam.append((box, s[: seam_end - box.y0].copy()))
                if tiles_down and below and box.y1 > region.y1:
                    handed[box] = s[region.y1 - box.y0 :].copy()
                t0 = time.perf_counter() if clock else 0.0
                if sums is None:
                    start(s.shape[-1])
                window = self._window(box, h, w, top)
                core = _core(box, region, rows_once, cols_once)
                if core is None:
                    sums.add(s, window, box, scratch=scratch)
                    if clock:
                        timed["blend"] += time.perf_counter() - t0
                    continue
                src = s[core.y0 - box.y0 : core.y1 - box.y0, core.x0 - box.x0 : core.x1 - box.x0]
                dst = (slice(core.y0 - region.y0, core.y1 - region.y0),
                       slice(core.x0 - region.x0, core.x1 - region.x0))
                t1 = time.perf_counter() if clock else 0.0
                out[dst] = self.to_mask(src) if mask else src
                if clock:
                    t2 = time.perf_counter()
                    timed["argmax"] += t2 - t1
                    timed["blend"] += t1 - t0
                    t0 = t2
                for part in _frame(box, core):
                    sl = (slice(part.y0 - box.y0, part.y1 - box.y0),
                          slice(part.x0 - box.x0, part.x1 - box.x0))
                    sums.add(s[sl], window[sl], part, scratch=scratch)
                if clock:
                    timed["blend"] += time.perf_counter() - t0
        finally:
            computed.close()
        t0 = time.perf_counter() if clock else 0.0
        if shared is not None:
            shared.clear()
            shared.update(keep)
        if sums is None:  # only with ``seam``: every row lies under tiles predicted elsewhere
            if not mask or below:
                raise ValueError(f"region {region} holds no tile of its own to blend")
            return np.zeros((region.height, region.width), np.uint8), None
        last_argmax = 0.0
        for sl, acc, wsum in sums.spans(region.height):
            probs = acc if integer else tiling.normalise(acc, wsum)
            if mask:
                t1 = time.perf_counter() if clock else 0.0
                out[sl] = self.to_mask(probs)
                if clock:
                    last_argmax += time.perf_counter() - t1
            else:
                out[sl] = probs
        band: Band | TileBand | None = None
        if below > 0:
            band = (TileBand(region.y1, dict(sorted(handed.items()))) if tiles_down
                    else Band(*sums.rows_from(region.height)))
        if clock:
            clock.seconds["blend"] += timed["blend"] + time.perf_counter() - t0 - last_argmax
            clock.seconds["argmax"] += timed["argmax"] + last_argmax
        return out, band

    def _window(self, box: tiling.Box, h: int, w: int, top: int) -> np.ndarray:
        """A tile's blending window: integer weights summing to ``top`` (when above 0) or float."""
        return (tiling.integer_window(box, h, w, self.overlap, top) if top
                else tiling.tile_window(box, h, w, ramp=self.overlap))

    def band_sums(self, image_size: tuple[int, int], band: TileBand, width: int) -> Band:
        """The :class:`Band` of sums that a :class:`TileBand`'s tiles add up to.

        Args:
            image_size: Full image ``(height, width)`` (the tile grid's, padded).
            band: The tiles' scores.
            width: Columns of the band (from column 0).

        Returns:
            The sums over rows ``[band.y0, last tile's end)``, in the order of the tile grid.

        Raises:
            ValueError: For a band without tiles.
        """
        if not band.tiles:
            raise ValueError("a band without tiles has no sums")
        h, w = image_size
        first = next(iter(band.tiles.values()))
        integer = first.dtype == np.uint8
        kind = np.uint16 if integer else np.float32
        top = tiling.integer_weight_top(h, w, self.tile, self.overlap) if integer else 0
        rows = max(b.y1 for b in band.tiles) - band.y0
        acc = np.zeros((rows, width, first.shape[-1]), kind)
        wsum = np.zeros((rows, width), kind)
        for box, sc in sorted(band.tiles.items()):
            tiling.accumulate(acc, wsum, sc, self._window(box, h, w, top)[band.y0 - box.y0 :],
                              tiling.Box(band.y0, box.x0, box.y1, box.x1), (band.y0, 0))
        return Band(acc, wsum)

    def finish_band(self, image_size: tuple[int, int], y0: int, above: Band,
                    tiles: list[tuple[tiling.Box, np.ndarray]]) -> np.ndarray:
        """The mask of a band whose tiles two processes predicted, as one process blends it.

        The rows ``[y0, y0 + rows)`` of the band lie under tiles starting above ``y0``, whose
        partial sums ``above`` holds (the band one region hands down, :meth:`blend_region`),
        and under tiles starting at or below ``y0`` that another region predicted with
        ``seam`` set. Their scores are added to ``above`` in the order of the tile grid, as
        :meth:`blend_region` adds them when it is given the band itself, so every pixel's
        sum, and so the mask, is the same.

        Args:
            image_size: Full image ``(height, width)`` (the tile grid's, padded).
            y0: The band's first row.
            above: The sums of the tiles starting above ``y0``, over the band's rows and the
                columns ``[0, above width)``.
            tiles: ``(box, scores over the band's rows)`` of the tiles below (any order).

        Returns:
            The band's ``rows x width`` ``uint8`` mask (no nodata marks: the caller's).
        """
        h, w = image_size
        acc, wsum = above.acc.copy(), above.wsum.copy()
        integer = acc.dtype == np.uint16
        top = tiling.integer_weight_top(h, w, self.tile, self.overlap) if integer else 0
        for box, scores in sorted(tiles, key=lambda t: t[0]):
            window = (tiling.integer_window(box, h, w, self.overlap, top) if integer
                      else tiling.tile_window(box, h, w, ramp=self.overlap))
            rows = scores.shape[0]
            part = tiling.Box(box.y0, box.x0, box.y0 + rows, box.x1)
            tiling.accumulate(acc, wsum, scores, window[:rows], part, (y0, 0))
        return self.to_mask(acc if integer else tiling.normalise(acc, wsum))

    def integer_masks(self) -> bool:
        """Whether tiled masks come from the model's 8-bit scores, blended in 16-bit integers.

        For a softmax output quantised to ``uint8``/``int8`` (scale above 0), the dequantised
        probability ``(q - z) * s`` is increasing in ``q`` with the same ``z`` and ``s`` for
        every class and tile, so the argmax of ``sum_t w_t * p_t`` is the argmax of
        ``sum_t w_t * q_t``: no float is needed (``int8`` is mapped to ``uint8`` keeping its
        order). Needs ``options.integer_blend``, more than one class, no test-time
        augmentation, and an output map of the tile's size (checked once on a blank tile
        when the model's shape does not say).
        """
        if self._int_blend is None:
            out = self.backend.output
            ok = (self.options.integer_blend and out.quantized
                  and out.dtype in (np.dtype(np.uint8), np.dtype(np.int8))
                  and self.meta.output == "softmax" and not self.single_channel
                  and (self.options.tta or "none") == "none")
            if ok:
                ok = self._output_size() == self.tile
            self._int_blend = bool(ok)
        return self._int_blend

    def _output_size(self) -> tuple[int, int]:
        """Rows and columns of the model's output map for one tile."""
        shape = self.backend.output.shape
        hw = shape[2:4] if self.meta.layout == "NCHW" and len(shape) == 4 else shape[1:3]
        if len(hw) == 2 and None not in hw:
            return int(hw[0]), int(hw[1])
        blank = np.zeros((1, *self.tile, self.channels), np.uint8)
        raw = self.backend.run(self.preprocess(blank))
        if raw.ndim == 4 and self.meta.layout == "NCHW":
            return int(raw.shape[2]), int(raw.shape[3])
        return int(raw.shape[1]), int(raw.shape[2])

    def _int_scores(self, raw: np.ndarray) -> np.ndarray:
        """A batch's 8-bit output as ``(N, H, W, K)`` ``uint8``, order kept (int8 + 128)."""
        y = raw[..., None] if raw.ndim == 3 else raw
        if self.meta.layout == "NCHW" and raw.ndim == 4:
            y = y.transpose(0, 2, 3, 1)
        if y.dtype == np.int8:
            y = np.bitwise_xor(y.view(np.uint8), np.uint8(0x80))
        return y

    def _scored(self, boxes: list[tiling.Box], pixels: np.ndarray, origin: tuple[int, int],
                integer: bool = False):
        """``(box, scores)`` for each box in order, the model one batch ahead on its thread.

        The scores live in a buffer reused by the next batch: use them before asking for more.
        With ``options.tta == "flips"`` each batch also runs mirrored left-right and top-bottom,
        and the scores, mirrored back, are averaged. With ``integer`` the scores are the
        model's 8-bit output (:meth:`integer_masks`).
        """
        oy, ox = origin
        step = max(self.options.batch, 1)
        flips = TTA_FLIPS[self.options.tta or "none"]

        clock = self.clock

        def prepare(chunk: list[tiling.Box]) -> list[np.ndarray]:
            t0 = time.perf_counter() if clock else 0.0
            tiles = np.stack([pixels[b.y0 - oy : b.y1 - oy, b.x0 - ox : b.x1 - ox] for b in chunk])
            out = [self.preprocess(np.ascontiguousarray(tiles[:, ::fy, ::fx])) for fy, fx in flips]
            if clock:
                clock.add("normalise", t0)
            return out

        def run(batches: list[np.ndarray]) -> list[np.ndarray]:
            t0 = time.perf_counter() if clock else 0.0
            out = [self.backend.run(x) for x in batches]
            if clock:
                clock.add("model", t0)
            return out

        chunks = [boxes[i : i + step] for i in range(0, len(boxes), step)]
        worker = self._model_thread() if len(chunks) > 1 else None
        for chunk, raws in run_ahead(chunks, prepare, run, worker):
            t0 = time.perf_counter() if clock else 0.0
            if integer:
                scores = self._int_scores(raws[0])
            elif len(raws) == 1:
                scores = self.to_scores(raws[0], *self.tile, reuse=True)
            else:
                scores = sum(self.to_scores(raw, *self.tile)[:, ::fy, ::fx]
                             for raw, (fy, fx) in zip(raws, flips, strict=True)) / len(raws)
            if clock:
                clock.add("scores", t0)
                clock.tiles += len(chunk)
            yield from zip(chunk, scores, strict=True)

    def _model_thread(self) -> ThreadPoolExecutor | None:
        """The thread that runs the model while this one prepares and blends tiles."""
        if not self.options.pipeline:
            return None
        if self._worker is None:
            self._worker = ThreadPoolExecutor(1, "edgeseg-model")
        return self._worker

    @property
    def per_image(self) -> bool:
        """Whether each image is standardised by its own band statistics and none are set yet.

        True for a model whose metadata says ``standardise: image`` until :meth:`for_scene`
        gives the statistics: :meth:`predict` and :meth:`predict_tiled` then take them from
        the image they are given; a streamed scene takes them from the whole scene.
        """
        return self.meta.standardise == "image" and not self._scene_set

    def image_statistics(self, image: np.ndarray, nodata: float | None = None
                         ) -> BandStats | None:
        """The band statistics of an image's pixels that hold data (``None``: none do)."""
        return band_statistics(image, invalid_pixels(image, nodata), self.meta.scale)

    def for_scene(self, stats: BandStats | None) -> Segmenter:
        """The model with the normalisation of one scene, sharing the opened runtime.

        Args:
            stats: The scene's band statistics (:meth:`image_statistics`, or
                :func:`firmware_bridge.io.blocks.raster_statistics` for a streamed raster);
                ``None`` (no pixel holds data) keeps the metadata's ``mean`` and ``std``.

        Returns:
            A shallow copy whose input is ``(pixel * scale - m_c) / (s_c / TARGET_STD)`` per
            band (:mod:`firmware_bridge.runtime.standardise`); the model itself unchanged
            for a model without per-image standardisation.
        """
        if self.meta.standardise != "image":
            return self
        self._model_thread()  # one model thread for this model and all its scenes
        twin = copy.copy(self)
        twin._scene_set = True
        twin._in_table = twin._out_buf = None
        if stats is not None:
            twin._mean, twin._std = stats.normalisation()
        return twin

    def fill_value(self) -> np.ndarray:
        """Pixel value (per band) that the model sees as 0: where pixels without data go."""
        return self._mean / self._scale

    def clean(self, pixels: np.ndarray, nodata: float | None = None
              ) -> tuple[np.ndarray, np.ndarray | None]:
        """Pixels ready for the model, and where they had no data.

        Args:
            pixels: ``HxWxC`` image or image part.
            nodata: The raster's nodata value (``None``: only NaN/infinite values).

        Returns:
            ``(pixels, invalid)``: a filled copy when some pixels had no data (else the input)
            and their ``HxW`` bool map (``None`` when every pixel holds data).
        """
        invalid = invalid_pixels(pixels, nodata)
        return fill_invalid(pixels, invalid, self.fill_value()), invalid

    def predict_tiled(self, image: np.ndarray, probabilities: bool = False,
                      nodata: float | None = None) -> SegResult:
        """Predict an image of any size: by blended, overlapping tiles, or resized.

        With ``resize == "tile"`` (the default), images smaller than a tile are padded by
        reflection and the result cropped back; with ``"fit"`` or ``"stretch"`` the image is
        resized to the model's input, predicted once and its scores resized back
        (:meth:`predict_resized`). Pixels without data get 255 in the mask (see :meth:`clean`).

        Args:
            image: ``HxWxC`` pixels.
            probabilities: Also return the blended probabilities.
            nodata: The raster's nodata value.

        Raises:
            EdgesegError: For a wrong band count or an image under ``min_size``.
        """
        if self.per_image:
            self.check_image(image)
            return self.for_scene(self.image_statistics(image, nodata)).predict_tiled(
                image, probabilities, nodata)
        if self.resize != "tile":
            return self.predict_resized(image, probabilities, nodata)
        self.check_image(image)
        h, w = image.shape[:2]
        image, invalid = self.clean(image, nodata)
        padded = tiling.pad_to_tile(image, self.tile)
        ph, pw = padded.shape[:2]
        out, _ = self.blend_region(padded, (0, 0), (ph, pw), tiling.Box(0, 0, ph, pw),
                                   mask=not probabilities)
        scores = out[:h, :w] if probabilities else None
        mask = self.to_mask(scores) if probabilities else out[:h, :w].copy()
        if invalid is not None:
            mask[invalid] = IGNORE_INDEX
        return SegResult(mask, self.probabilities(scores) if probabilities else None,
                         0 if invalid is None else int(np.count_nonzero(invalid)))

    def predict_resized(self, image: np.ndarray, probabilities: bool = False,
                        nodata: float | None = None, mode: str | None = None) -> SegResult:
        """Predict an image of any size in one inference, resized to the model's input.

        The image goes into the model's ``tile`` frame (:func:`~firmware_bridge.runtime.resize.to_frame`:
        ``"stretch"`` resizes it to the frame, ``"fit"`` keeps its aspect ratio and pads; the
        options' ``resize_filter`` chooses the filter), the scores of its part of the frame are
        resized bilinearly back to its size, and the mask is taken from those
        (:func:`~firmware_bridge.runtime.resize.upsample_mask`); with ``resize_back="mask"``, the
        mask of that part is resized to the image by nearest neighbour instead, and so are the
        probabilities. Test-time augmentation applies to the frame as to a tile.

        Args:
            image: ``HxWxC`` pixels.
            probabilities: Also return the probabilities at the image's size.
            nodata: The raster's nodata value.
            mode: ``"fit"`` or ``"stretch"`` (``None``: :attr:`resize`, which must be one).

        Raises:
            EdgesegError: For a wrong band count, an image under ``min_size``, or a mode that
                is not a resize.
        """
        mode = mode or self.resize
        if mode not in ("fit", "stretch"):
            raise EdgesegError(f"predict_resized takes resize fit or stretch, not {mode!r}")
        self.check_image(image)
        h, w = image.shape[:2]
        image, invalid = self.clean(image, nodata)
        frame, box = resize.to_frame(image, self.tile, mode, self.fill_value(),
                                     self.options.resize_filter)
        whole = tiling.Box(0, 0, *self.tile)
        computed = self._scored([whole], frame, (0, 0))
        try:
            _, scores = next(computed)
            part = np.array(scores[box.y0 : box.y1, box.x0 : box.x1])  # the buffer is reused
        finally:
            computed.close()
        nearest = self.options.resize_back == "mask"
        argmax = not self.multilabel and part.shape[-1] > 1
        if nearest:
            mask = resize.resize_nearest(self.to_mask(part), h, w)
        else:
            mask = resize.upsample_mask(part, h, w, self.to_mask, argmax)
        if invalid is not None:
            mask[invalid] = IGNORE_INDEX
        probs = None
        if probabilities:  # their argmax is the mask
            back = resize.resize_nearest(part, h, w) if nearest else resize.upsample_scores(part, h, w)
            probs = self.probabilities(back)
        return SegResult(mask, probs, 0 if invalid is None else int(np.count_nonzero(invalid)))
