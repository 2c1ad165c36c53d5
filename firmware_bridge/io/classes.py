"""The class table (name, colour, ignore) and conversions between colour and index masks.

A class table is a CSV file with the header ``name,colour,ignore``::

    name,colour,ignore
    Building,#3C1098,0
    Unlabeled,#9B9B9B,1

Rows with ``ignore=0`` are the model's classes, indexed in file order from 0. Rows with
``ignore=1`` name colours whose pixels no loss or metric counts (index ``IGNORE_INDEX``).
Colour is optional for index masks, where pixel value ``i`` is class ``i`` and 255 is ignore.
The file is UTF-8 (a byte-order mark, as spreadsheet programs write it, is fine); the header
may spell ``color``; ``ignore`` is ``0``/``1`` (or ``no``/``yes``, ``false``/``true``, empty
for 0). Names and colours must be unique. No other column is allowed, in the header or in a
row: :meth:`ClassTable.load`, the one reader of every command (``edgeseg data check``,
``train``, ``export``, ``edgeseg-run predict --classes``, ``validate``), refuses it.

A labels file (``.txt``, as model publishers ship them) is the short form: one class name per
line in output-channel order, blank lines ignored, no colours (:func:`parse_labels`). A
background class is a line like any other (first, where the model has a channel for it).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from firmware_bridge import IGNORE_INDEX
from firmware_bridge.errors import EdgesegError

Colour = tuple[int, int, int]
IGNORE_VALUES = {"0": False, "1": True, "": False, "no": False, "yes": True, "false": False,
                 "true": True}


def parse_colour(text: str) -> Colour:
    """Parse ``#RRGGBB`` or ``R,G,B`` / ``R G B`` into an RGB tuple.

    Raises:
        EdgesegError: When the text is not a colour.

    """
    text = text.strip()
    try:
        if text.startswith("#") and len(text) == 7:
            return (int(text[1:3], 16), int(text[3:5], 16), int(text[5:7], 16))
        parts = [int(v) for v in text.replace(",", " ").split()]
    except ValueError as exc:
        raise EdgesegError(f"not a colour: {text!r} (use #RRGGBB)") from exc
    if len(parts) != 3 or not all(0 <= v <= 255 for v in parts):
        raise EdgesegError(f"not a colour: {text!r} (use #RRGGBB)")
    return (parts[0], parts[1], parts[2])


def parse_labels(text: str, source: str = "labels") -> list[str]:
    """Class names from the text of a labels file: one name per line, blank lines ignored.

    Args:
        text: The file's text (a byte-order mark and Windows line ends are fine).
        source: What the text came from, for the message.

    Returns:
        The names, in line order, without surrounding white space.

    Raises:
        EdgesegError: When no line holds a name.
    """
    names = [line.strip() for line in text.lstrip("\ufeff").splitlines()]
    names = [n for n in names if n]
    if not names:
        raise EdgesegError(f"{source}: no class names (one name per line)")
    return names


def read_labels(path: str | Path) -> list[str]:
    """Class names from a labels ``.txt`` file (see :func:`parse_labels`).

    Args:
        path: The file.

    Returns:
        The names, in line order.

    Raises:
        EdgesegError: When the file is missing, not UTF-8 text, or holds no name.
    """
    path = Path(path)
    return parse_labels(_read_text(path, "labels file", "the labels as UTF-8, one name per line"),
                        str(path))


def _read_text(path: Path, what: str, save_as: str) -> str:
    """The text of a small UTF-8 file (a byte-order mark dropped).

    Raises:
        EdgesegError: When the file is missing, not UTF-8, or binary; ``what`` names the kind
            of file and ``save_as`` how to save it instead.
    """
    if not path.is_file():
        raise EdgesegError(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EdgesegError(f"{path}: not a UTF-8 text file (byte {exc.start}): save {save_as}") from None
    if "\x00" in text:
        raise EdgesegError(f"{path}: a binary file, not a {what}")
    return text


def hex_colour(colour: Colour) -> str:
    """Format an RGB tuple as ``#RRGGBB``."""
    return "#{:02X}{:02X}{:02X}".format(*colour)


def _pack(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb.astype(np.uint32)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def _default_colour(i: int) -> Colour:
    rng = np.random.default_rng(i + 7)
    return tuple(int(v) for v in rng.integers(40, 256, size=3))  # type: ignore[return-value]


@dataclass
class ClassTable:
    """Classes of a segmentation task.

    Attributes:
        names: Class names, index order.
        colours: RGB colour per class (``None`` where the table gives none).
        ignore_colours: Colours of pixels to ignore.
        ignore_names: Names of the ignore rows, for reports.

    """

    names: list[str]
    colours: list[Colour | None] = field(default_factory=list)
    ignore_colours: list[Colour] = field(default_factory=list)
    ignore_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            raise EdgesegError("a class table needs at least one class that is not ignored")
        if not self.colours:
            self.colours = [None] * len(self.names)
        if len(self.colours) != len(self.names):
            raise EdgesegError("class table: one colour (or none) per class")
        names = list(self.names) + list(self.ignore_names)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise EdgesegError(f"class table: {', '.join(twice)} is named twice; every row needs "
                               "its own name")
        known = [c for c in self.colours if c is not None] + list(self.ignore_colours)
        twice_c = sorted({hex_colour(c) for c in known if known.count(c) > 1})
        if twice_c:
            raise EdgesegError(f"class table: the colour {', '.join(twice_c)} is listed twice")

    @property
    def num_classes(self) -> int:
        """Number of (non-ignore) classes."""
        return len(self.names)

    @classmethod
    def load(cls, path: str | Path) -> ClassTable:
        """Read a class table CSV (``name,colour,ignore``), or a labels ``.txt`` (names only).

        Args:
            path: The CSV file, or a ``.txt`` with one class name per line.

        Returns:
            The table.

        Raises:
            EdgesegError: When the file is missing or malformed, an extra column included
                (the message names the row).

        """
        path = Path(path)
        if path.suffix.lower() == ".txt":
            names = read_labels(path)
            try:
                return cls(names)
            except EdgesegError as exc:
                raise EdgesegError(f"{path}: {exc}") from None
        text = _read_text(path, "class table CSV", "the class table as UTF-8 CSV")
        names, colours, ign_c, ign_n = [], [], [], []
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [(f or "").strip().lower() for f in reader.fieldnames or []]
        header = ["colour" if f == "color" else f for f in header]
        unknown = [f for f in header if f not in ("name", "colour", "ignore")]
        if "name" not in header or unknown:
            raise EdgesegError(f"{path}: the header must be 'name,colour,ignore' (found "
                               f"{','.join(reader.fieldnames or []) or 'nothing'})")
        reader.fieldnames = header
        for line, row in enumerate(reader, start=2):
            extra = row.pop(None, None)  # DictReader's key for values beyond the header
            if extra:
                raise EdgesegError(
                    f"{path}:{line}: {len(header) + len(extra)} values but the header has "
                    f"{len(header)} columns ({','.join(header)}); remove the extra column "
                    "(write an R,G,B colour in quotes or as #RRGGBB)")
            name = (row.get("name") or "").strip()
            if not name:
                raise EdgesegError(f"{path}:{line}: empty class name")
            text = (row.get("colour") or "").strip()
            try:
                colour = parse_colour(text) if text else None
            except EdgesegError as exc:
                raise EdgesegError(f"{path}:{line}: {exc}") from None
            flag = (row.get("ignore") or "0").strip().lower()
            if flag not in IGNORE_VALUES:
                raise EdgesegError(f"{path}:{line}: ignore must be 0 or 1, got {flag!r}")
            if IGNORE_VALUES[flag]:
                if colour is None:
                    raise EdgesegError(f"{path}:{line}: an ignore row needs a colour")
                ign_c.append(colour)
                ign_n.append(name)
            else:
                names.append(name)
                colours.append(colour)
        try:
            return cls(names, colours, ign_c, ign_n)
        except EdgesegError as exc:
            raise EdgesegError(f"{path}: {exc}") from None

    def palette(self) -> list[Colour]:
        """A colour for every class (a stable made-up one where the table has none)."""
        return [c if c is not None else _default_colour(i) for i, c in enumerate(self.colours)]

    def hex_colours(self) -> list[str]:
        """``#RRGGBB`` for every class."""
        return [hex_colour(c) for c in self.palette()]

    def decode_mask(
        self, mask: np.ndarray, source: str = "", unknown_to_ignore: bool = False
    ) -> np.ndarray:
        """Turn a colour (HxWx3) or index (HxW) mask into class indices, 255 for ignore.

        Args:
            mask: RGB colour mask, or index mask holding 0..K-1 and 255.
            source: File name for error messages.
            unknown_to_ignore: Map colours/values not in the table to ignore instead of failing.

        Returns:
            ``uint8`` HxW class-index mask.

        Raises:
            EdgesegError: For a colour or value not in the table; names the file, the colour and
                its pixel count.

        """
        where = f"{source}: " if source else ""
        if mask.ndim == 3 and mask.shape[2] >= 3:
            return self._decode_rgb(mask[..., :3], where, unknown_to_ignore)
        if mask.ndim == 3 and mask.shape[2] == 1:
            mask = mask[..., 0]
        if mask.ndim != 2:
            raise EdgesegError(f"{where}mask must be HxW indices or HxWx3 colours, got {mask.shape}")
        values, counts = np.unique(mask, return_counts=True)
        bad = [(int(v), int(n)) for v, n in zip(values, counts, strict=True)
               if v >= self.num_classes and v != IGNORE_INDEX]
        out = mask.astype(np.uint8)
        if bad and not unknown_to_ignore:
            v, n = bad[0]
            raise EdgesegError(
                f"{where}value {v} ({n} pixels) is not a class index 0..{self.num_classes - 1} "
                f"or {IGNORE_INDEX}: fix the mask or pass --unknown-to-ignore"
            )
        for v, _ in bad:
            out[mask == v] = IGNORE_INDEX
        return out

    def _decode_rgb(self, rgb: np.ndarray, where: str, unknown_to_ignore: bool) -> np.ndarray:
        # A class without a colour has the made-up one of palette(): the colour predict writes
        # it in, so that a predicted mask reads back as the truth. The table's colours win.
        lut: dict[int, int] = {}
        own = [(i, c) for i, c in enumerate(self.colours) if c is not None]
        for i, c in [*enumerate(self.palette()), *own]:
            lut[int(_pack(np.array(c)))] = i
        for c in self.ignore_colours:
            lut[int(_pack(np.array(c)))] = IGNORE_INDEX
        packed = _pack(rgb)
        values, inverse, counts = np.unique(packed.ravel(), return_inverse=True, return_counts=True)
        mapped = np.full(len(values), IGNORE_INDEX, dtype=np.uint8)
        for j, v in enumerate(values):
            if int(v) in lut:
                mapped[j] = lut[int(v)]
            elif not unknown_to_ignore:
                colour = hex_colour(((v >> 16) & 255, (v >> 8) & 255, v & 255))
                if not own and not self.ignore_colours:
                    raise EdgesegError(
                        f"{where}colour {colour} ({int(counts[j])} pixels) is none of the "
                        "colours edgeseg writes masks in, and the class table lists no "
                        "colours: give a class table CSV with colours, or index masks"
                    )
                raise EdgesegError(
                    f"{where}colour {colour} ({int(counts[j])} pixels) is not in the class "
                    "table: add it (ignore=1 to skip it) or pass --unknown-to-ignore"
                )
        return mapped[inverse].reshape(packed.shape)

    def colourise(self, mask: np.ndarray, ignore_colour: Colour = (0, 0, 0)) -> np.ndarray:
        """Render a class-index mask as RGB (ignore pixels in ``ignore_colour``)."""
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = np.array(self.palette(), dtype=np.uint8)
        lut[IGNORE_INDEX] = ignore_colour
        return lut[mask]
