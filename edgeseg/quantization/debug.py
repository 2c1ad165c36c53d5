"""Where int8 loses accuracy: the quantization error of every layer, float against fake-quant.

The float model and its quantization-aware twin (:func:`edgeseg.quantization.qat.quantize`: the same layers,
prefixed ``quant_``, with fake quantization of weights and activations) run the same batch; for
every float layer with a twin, the twin's output is compared with the float output:

* ``sqnr_db``: signal-to-quantization-noise ratio per channel, the median over channels of
  ``10 log10(var f / mean (q - f)^2)``. The signal is the channel's variation, not its power: a
  channel that is a near-constant offset plus a small image-dependent part carries only that
  part, and a channel stretched by an outlier elsewhere in its tensor shows its own loss.
  int8 of a well-conditioned tensor gives 30-45 dB; under 15 dB the output is mostly noise;
* ``added_db``: how many dB this layer itself loses, the SQNR of its worst input minus its own
  (errors accumulate along the graph; a layer that is fine on its own inherits its inputs'
  error and adds little). The worst layers are ranked by this;
* ``range``: the float output's min and max, and ``outlier_ratio``: the range's largest magnitude
  over the 99.9th percentile of ``|f|``. An 8-bit range stretched by one outlier (10x and more)
  quantizes every other value with a step ten times too coarse.

The same report serves a QAT model (its learned ranges) and any post-training int8 route: a
QAT twin whose ranges were only calibrated (:func:`simulated_int8`) quantizes as a converter's
calibration would, so it points at the layers an int8 TFLite or OpenVINO model suffers from.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from edgeseg.quantization.qat import quantize
from edgeseg.quantization.ranges import calibrate_ranges
from edgeseg.tf_env import tf_keras

QAT_PREFIX = "quant_"
INPUT_QUANTIZER = "QuantizeLayer"
MAX_DB = 99.0
"""SQNR reported for an exact copy."""
NOISY_DB = 15.0
"""A layer output with an SQNR under this is mostly quantization noise."""


@dataclass
class LayerError:
    """The quantization error of one layer's output (see the module docstring).

    Attributes:
        layer: The float model's layer name.
        kind: Its Keras class.
        sqnr_db: Signal-to-quantization-noise ratio of its output, in dB.
        added_db: dB lost at this layer (its worst input's SQNR minus its own; 0 when it
            improves on its inputs).
        lo: Minimum of the float output.
        hi: Maximum of the float output.
        outlier_ratio: ``max |f|`` over the 99.9th percentile of ``|f|``.
    """

    layer: str
    kind: str
    sqnr_db: float
    added_db: float
    lo: float
    hi: float
    outlier_ratio: float

    def line(self) -> str:
        """One line for a report."""
        return (f"{self.layer:<34} {self.kind:<20} SQNR {self.sqnr_db:6.1f} dB  "
                f"adds {self.added_db:5.1f} dB  range [{self.lo:.3g}, {self.hi:.3g}]  "
                f"outlier x{self.outlier_ratio:.1f}")


@dataclass
class QuantReport:
    """Per-layer errors in graph order, and the SQNR of the quantized input and of the output."""

    layers: list[LayerError]
    output_sqnr_db: float
    input_sqnr_db: float = MAX_DB

    def worst(self, n: int = 5) -> list[LayerError]:
        """The ``n`` layers that add the most error, worst first."""
        return sorted(self.layers, key=lambda e: -e.added_db)[:n]

    def text(self, n: int = 5) -> str:
        """A short report: the output's SQNR and the worst layers."""
        lines = [f"int8 quantization error per layer (input SQNR {self.input_sqnr_db:.1f} dB, output "
                 f"{self.output_sqnr_db:.1f} dB; under {NOISY_DB:g} dB a tensor is mostly noise); "
                 "layers adding the most:"]
        lines += ["  " + e.line() for e in self.worst(n)]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-ready dict (worst first)."""
        rows = self.worst(len(self.layers))
        return {"output_sqnr_db": _finite(self.output_sqnr_db),
                "input_sqnr_db": _finite(self.input_sqnr_db),
                "layers": [{k: _finite(v) for k, v in asdict(e).items()} for e in rows]}


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


def sqnr_db(reference: np.ndarray, approx: np.ndarray) -> float:
    """Median over channels (last axis) of ``10 log10(var ref / mean (approx - ref)^2)``.

    Channels that do not vary in ``reference`` carry no signal and are left out; an exact
    copy gives :data:`MAX_DB`; a tensor with no varying channel, 0 when it is not exact.
    """
    ref = np.asarray(reference, np.float64)
    ref = ref.reshape(-1, ref.shape[-1]) if ref.ndim > 1 else ref.reshape(-1, 1)
    err = np.asarray(approx, np.float64).reshape(ref.shape) - ref
    noise = np.mean(err**2, axis=0)
    signal = np.var(ref, axis=0)
    live = signal > 0
    if not np.any(noise > 0):
        return MAX_DB
    if not np.any(live):
        return 0.0
    with np.errstate(divide="ignore"):
        db = 10.0 * np.log10(signal[live] / noise[live])
    return float(min(np.median(db), MAX_DB))


def _outlier_ratio(values: np.ndarray) -> float:
    mags = np.abs(values.ravel())
    top = float(mags.max()) if mags.size else 0.0
    p999 = float(np.percentile(mags, 99.9)) if mags.size else 0.0
    return top / p999 if p999 > 0 else (math.inf if top > 0 else 1.0)


def _inbound(layer) -> list[str]:
    if not layer.inbound_nodes:
        return []
    inbound = layer.inbound_nodes[0].inbound_layers
    return [n.name for n in (inbound if isinstance(inbound, list) else [inbound])]


def _twin(qat, layer):
    """The layer of ``qat`` whose output is ``layer``'s, quantized (the input: ``QuantizeLayer``)."""
    if type(layer).__name__ == "InputLayer":
        return next((q for q in qat.layers if type(q).__name__ == INPUT_QUANTIZER), None)
    try:
        return qat.get_layer(QAT_PREFIX + layer.name)
    except ValueError:
        return None


def layer_errors(model, qat, images: np.ndarray) -> QuantReport:
    """The quantization error of every layer of ``model`` against its twin in ``qat``.

    Args:
        model: The float ``tf_keras`` model.
        qat: Its quantization-aware model (any ranges), same input size.
        images: Normalised input batch ``NxHxWxC`` float32 (a few training crops).

    Returns:
        The report; layers without a twin are left out, the input is reported on its own.
    """
    _, keras = tf_keras()
    pairs = [(layer, _twin(qat, layer)) for layer in model.layers]
    pairs = [(a, b) for a, b in pairs if b is not None]
    probe_f = keras.Model(model.inputs, [a.output for a, _ in pairs])
    probe_q = keras.Model(qat.inputs, [b.output for _, b in pairs])
    outs_f = probe_f(images, training=False)
    outs_q = probe_q(images, training=False)
    sqnr: dict[str, float] = {}
    rows = []
    for (layer, _), f, q in zip(pairs, outs_f, outs_q, strict=True):
        f, q = np.asarray(f), np.asarray(q)
        s = sqnr[layer.name] = sqnr_db(f, q)
        if type(layer).__name__ == "InputLayer":
            continue
        before = [sqnr[n] for n in _inbound(layer) if n in sqnr]
        added = max(0.0, min(before, default=MAX_DB) - s)
        rows.append(LayerError(layer.name, type(layer).__name__, s, added, float(f.min()),
                               float(f.max()), _outlier_ratio(f)))
    final = np.asarray(model(images, training=False))
    inputs = [sqnr[a.name] for a, _ in pairs if type(a).__name__ == "InputLayer"]
    return QuantReport(rows, sqnr_db(final, np.asarray(qat(images, training=False))),
                       inputs[0] if inputs else MAX_DB)


def simulated_int8(model, images: Sequence[np.ndarray] | np.ndarray):
    """A QAT twin of ``model`` with its ranges calibrated on ``images`` and no training.

    It quantizes as a post-training int8 conversion calibrated on the same images would, so
    :func:`layer_errors` on it tells where such a conversion loses accuracy.
    """
    qat = quantize(model)
    batch = np.asarray(images, np.float32)
    calibrate_ranges(qat, model, [batch[i : i + 8] for i in range(0, len(batch), 8)])
    return qat
