"""Decorrelating first-order filtered noise instead of masking it.

A point-scanning microscope's detector (a PMT and its analog filter) passes the shot noise through a
causal exponential filter along the scan: the noise is then first-order autoregressive along that axis,
n[t] = rho * n[t - 1] + e[t] with white e, and its autocorrelation at lag k is rho**k. structN2V would
hide a line of correlated neighbours from the network; here the image is whitened instead,
w[t] = x[t] - rho * x[t - 1], which turns that noise into white noise that plain N2V (a centre-only
blind spot) removes while the network still sees every neighbour. The prediction is coloured back by
the inverse filter. On the real set's PMT cases this gained 0.9-2.3 dB over the masked line
(docs/benchmarks.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

AXES = {"X": -1, "Y": -2}  # image axis of the filter -> array axis
RHO_RANGE = (0.2, 0.8)  # weaker: a mask of 3 pixels costs little; stronger: colouring amplifies errors 1 / (1 - rho)
CHECKED_LAGS = range(2, 9)  # the correlation must follow rho**k this far...
TOLERANCE = 0.05  # ...within this much, or it is not first-order (box, Gaussian and banded noise are not)
FIT_LAGS = 128  # a line start's trace rho**(t + 1) is below 1e-12 beyond this at rho 0.8


@dataclass(frozen=True)
class Whitening:
    """The first-order filter of one channel's noise: along image `axis` ("X" or "Y"), neighbour correlation `rho`.

    `start_weight` (0-1) says how far `colour` trusts the start it fits to each line's noisy first pixels over the
    start `whiten` assumes; training measures it on the images' own line starts (`fit_start_weight`).
    """

    axis: str
    rho: float
    start_weight: float = 1.0

    def whiten(self, array: np.ndarray) -> np.ndarray:
        """x[t] - rho * x[t - 1] along the axis (float32); the first pixel's predecessor is taken equal to it."""
        axis = AXES[self.axis]
        array = np.asarray(array, np.float32)
        first = np.take(array, [0], axis=axis)
        whitened, _ = lfilter([1.0, -self.rho], [1.0], array, axis=axis, zi=-self.rho * first)
        return whitened.astype(np.float32, copy=False)

    def colour(self, array: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """The inverse of `whiten`: y[t] = w[t] + rho * y[t - 1] along the axis (float32).

        The start y[-1] is unknown (a scanner's filter carries the line before, or the flyback, into each
        line). Without `anchor` it is taken as in `whiten` (equal to y[0]), and colouring undoes whitening
        exactly. With `anchor`, the image that was whitened (noisy: the start is a mean over its first pixels),
        the start's decaying trace rho**(t + 1) * y[-1] is fitted to anchor minus the colouring from zero
        (least squares), and the start used lies `start_weight` of the way from the assumed start to the fitted
        one; colouring `whiten(x)` with anchor x still gives x exactly.
        """
        axis = AXES[self.axis]
        array = np.asarray(array, np.float32)
        first = np.take(array, [0], axis=axis)
        if anchor is None:
            coloured, _ = lfilter([1.0], [1.0, -self.rho], array, axis=axis, zi=self.rho / (1 - self.rho) * first)
            return coloured.astype(np.float32, copy=False)
        coloured, _ = lfilter([1.0], [1.0, -self.rho], array, axis=axis, zi=np.zeros_like(first))
        shape = [1] * array.ndim
        shape[axis] = array.shape[axis]
        trace = (self.rho ** np.arange(1, array.shape[axis] + 1, dtype=np.float64)).reshape(shape)
        residual = np.asarray(anchor, np.float64) - coloured
        fitted = np.sum(residual * trace, axis=axis, keepdims=True) / np.sum(trace**2)
        assumed = first / (1 - self.rho)
        start = assumed + self.start_weight * (fitted - assumed)
        return (coloured + trace * start).astype(np.float32, copy=False)

    def fit_start_weight(self, anchor: np.ndarray, assumed: np.ndarray, fitted: np.ndarray) -> float:
        """The `start_weight` for lines like these (empirical Bayes): `assumed` and `fitted` are their colourings
        with start_weight 0 and 1, `anchor` the noisy lines. A fitted start carries the noise of the first pixels;
        the fits scatter around the assumed starts by that noise plus the true departures. The weight is the share
        of the departures in that scatter: near 0 where the starts are as assumed, near 1 where they are not
        (a filter carrying the line before, or the flyback, into each line)."""
        axis = AXES[self.axis]
        departures = np.take(np.asarray(fitted, np.float64) - assumed, 0, axis=axis) / self.rho
        residual = np.take(self.whiten(anchor) - self.whiten(fitted), np.arange(1, np.shape(anchor)[axis]), axis=axis)
        noise = float(np.mean(residual.astype(np.float64) ** 2)) / (1 - self.rho**2)  # the anchor's filtered noise
        lags = np.arange(min(np.shape(anchor)[axis], FIT_LAGS))
        trace = self.rho ** (lags + 1.0)
        correlation = self.rho ** np.abs(lags[:, None] - lags[None, :])
        fit_noise = noise * float(trace @ correlation @ trace) / np.sum(trace**2) ** 2
        spread = max(float(np.mean(departures**2)) - fit_noise, 0.0)
        return round(float(spread / (spread + fit_noise)), 4) if spread + fit_noise > 0 else 1.0

    def bias_gain(self, length: int) -> float:
        """The mean change of `colour(w, anchor)` along lines of `length` pixels when w rises by 1 everywhere
        (1 / (1 - rho) far from the lines' start, less near it, where the anchor holds the level)."""
        shape = (1, length) if self.axis == "X" else (length, 1)
        return float(self.colour(np.ones(shape, np.float32), anchor=np.zeros(shape, np.float32)).mean())

    def describe(self) -> str:
        return f"decorrelated along {self.axis} (rho {self.rho:.2f})"

    def to_values(self) -> list:
        return [self.axis, self.rho, self.start_weight]


def detect_whitening(acf: np.ndarray, mask: np.ndarray) -> Whitening | None:
    """The first-order filter explaining a straight horizontal or vertical line `mask`, or None.

    `acf` is the measured autocorrelation (odd square, lag 0 at its centre). The line's direction must
    have a neighbour correlation rho in RHO_RANGE and correlations within TOLERANCE of rho**k at the
    CHECKED_LAGS, on both sides; any other mask (a single pixel, a blob, a diagonal) gives None.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) < 3 or (np.ptp(ys) and np.ptp(xs)):
        return None
    axis = "X" if np.ptp(xs) else "Y"
    centre = acf.shape[0] // 2
    if centre < CHECKED_LAGS[-1]:
        return None
    line = acf[centre] if axis == "X" else acf[:, centre]
    rho = float(line[centre + 1] + line[centre - 1]) / 2
    if not RHO_RANGE[0] <= rho <= RHO_RANGE[1]:
        return None
    lags = np.asarray(CHECKED_LAGS)
    expected = rho**lags
    if max(np.abs(line[centre + lags] - expected).max(), np.abs(line[centre - lags] - expected).max()) > TOLERANCE:
        return None
    return Whitening(axis, round(rho, 4))


def whiten_channels(array: np.ndarray, filters: list[Whitening | None], channel_axis: int) -> np.ndarray:
    """`array` (float32) with each channel whitened by its filter (None: left as it is)."""
    return _per_channel(array, filters, channel_axis, Whitening.whiten)


def colour_channels(array: np.ndarray, filters: list[Whitening | None], channel_axis: int,
                    anchor: np.ndarray | None = None) -> np.ndarray:
    """The inverse of `whiten_channels`; `anchor` as for `Whitening.colour`."""
    return _per_channel(array, filters, channel_axis, Whitening.colour, anchor)


def _per_channel(array, filters, channel_axis: int, operation, anchor=None) -> np.ndarray:
    result = np.array(array, np.float32)
    for channel, whitening in enumerate(filters):
        if whitening is not None:
            index = (slice(None),) * (channel_axis % result.ndim) + (channel,)
            extra = () if anchor is None else (anchor[index],)
            result[index] = operation(whitening, result[index], *extra)
    return result


def whitening_from_values(values) -> Whitening:
    """A Whitening from [axis, rho, start_weight] as stored in a model file; ValueError says what is wrong."""
    numbers = values[1:] if isinstance(values, (list, tuple)) else ()
    if (not isinstance(values, (list, tuple)) or len(values) != 3 or values[0] not in AXES
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers)
            or not 0 < values[1] < 1 or not 0 <= values[2] <= 1):
        raise ValueError(f"a whitening filter must be [axis X or Y, 0 < rho < 1, 0 <= start weight <= 1], "
                         f"got {values!r:.80}")
    return Whitening(values[0], float(values[1]), float(values[2]))
