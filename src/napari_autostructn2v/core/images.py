"""Input checks and normalisation shared by training, inference and ROI selection."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError  # noqa: F401  (raised here; also importable from here)


def check_image(image, name: str = "image", min_size: int | None = None, finite: bool = True) -> np.ndarray:
    """Return `image` as an ndarray of 2D slices (..., Y, X), or raise InputError.

    Accepts 2D images and stacks of any leading axes (Z, T, ...), integer, float or bool.
    Refuses RGB(A), complex, non-finite values (unless `finite=False` skips that full scan)
    and images smaller than `min_size` pixels.
    """
    array = np.asarray(image)
    if array.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {array.dtype}; expected an integer or floating-point image.")
    if array.ndim < 2:
        raise InputError(f"{name} has shape {array.shape}; expected a 2D image (Y, X) or a stack (..., Y, X).")
    if array.ndim >= 3 and array.shape[-1] in (3, 4):
        raise InputError(
            f"{name} has shape {array.shape}, which looks like an RGB(A) image. "
            "Denoise one channel at a time: pass image[..., c], or convert it to grey first "
            "(skimage.color.rgb2gray)."
        )
    if min(array.shape[-2:]) == 0:
        raise InputError(f"{name} is empty (shape {array.shape}).")
    if min_size is not None and min(array.shape[-2:]) < min_size:
        raise InputError(
            f"{name} is {array.shape[-2]}x{array.shape[-1]} pixels, smaller than the patch size {min_size}. "
            f"Choose a patch size of at most {_largest_patch(min(array.shape[-2:]))} or use a larger image."
        )
    if finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(
            f"{name} contains {bad} NaN or infinite value(s). Replace them first, "
            "for example with numpy.nan_to_num or by inpainting."
        )
    return array


def _largest_patch(size: int) -> int:
    return max(16, (size // 8) * 8)


def as_slices(image):
    """View an (..., Y, X) array as (N, Y, X) without copying where possible; a MappedPlane is one slice."""
    if isinstance(image, MappedPlane):
        return [image]
    return image.reshape((-1, *image.shape[-2:]))


class MappedPlane:
    """One 2D slice of an uncompressed image file, read through a memory map opened for each read.

    Indexing returns an in-memory copy of just the pixels asked for (`np.asarray` gives the whole
    slice). Nothing stays mapped between reads, so however many and large the files, memory holds
    only what is in use. Training accepts these in place of arrays.
    """

    ndim = 2

    def __init__(self, path, offset: int, file_shape: tuple[int, ...], file_dtype, index: tuple[int, ...] = ()):
        self.path = path
        self.offset = offset
        self.file_shape = tuple(file_shape)
        self.file_dtype = np.dtype(file_dtype)  # with the file's byte order
        self.index = tuple(index)  # of the slice in the file's leading axes
        self.dtype = self.file_dtype.newbyteorder("=")
        self.shape = self.file_shape[-2:]
        self.size = self.shape[0] * self.shape[1]

    def __getitem__(self, key) -> np.ndarray:
        mapped = np.memmap(self.path, self.file_dtype, "r", self.offset, self.file_shape)
        return np.array(mapped[self.index][key], dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        plane = self[...]
        return plane if dtype is None else plane.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"MappedPlane({self.path}, slice {self.index}, shape {self.shape}, {self.dtype})"


class ChannelPlane:
    """A MappedPlane seen as a one-channel (1, Y, X) sample: indexing reads only the pixels asked for."""

    ndim = 3

    def __init__(self, plane: MappedPlane):
        self.plane = plane
        self.shape = (1, *plane.shape)
        self.dtype = plane.dtype

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key) -> np.ndarray | MappedPlane:
        if isinstance(key, (int, np.integer)):
            if key not in (0, -1):
                raise IndexError(f"channel {key} of a one-channel plane")
            return self.plane
        key = key if isinstance(key, tuple) else (key,)
        if key and key[0] is Ellipsis:
            return self.plane[key[1:]][None] if len(key) > 1 else np.asarray(self.plane)[None]
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.asarray(self.plane, dtype=dtype)[None]


@dataclass(frozen=True)
class Normalisation:
    """Affine map between image units and the network's units: (x - mean) / std.

    With several channels, `mean` and `std` are tuples (one value per channel) and arrays are
    mapped along their `channel_axis`; each channel keeps its own units.
    """

    mean: float | tuple[float, ...]
    std: float | tuple[float, ...]

    @classmethod
    def fit(cls, images: list[np.ndarray]) -> Normalisation:
        """Mean and standard deviation over all pixels, one 2D slice at a time (bounded memory)."""
        slices = [plane for im in images for plane in as_slices(im)]
        count = sum(plane.size for plane in slices)
        mean = sum(float(np.sum(plane, dtype=np.float64)) for plane in slices) / count
        squares = sum(float(np.sum((np.asarray(plane, dtype=np.float64) - mean) ** 2)) for plane in slices)
        std = (squares / count) ** 0.5
        return cls(mean=mean, std=std if std > 0 else 1.0)

    @classmethod
    def fit_channels(cls, samples: list[np.ndarray]) -> Normalisation:
        """One mean and standard deviation per channel of (C, ...) arrays; plain numbers for one channel."""
        per_channel = [cls.fit([sample[channel] for sample in samples]) for channel in range(samples[0].shape[0])]
        if len(per_channel) == 1:
            return per_channel[0]
        return cls(tuple(n.mean for n in per_channel), tuple(n.std for n in per_channel))

    @property
    def channels(self) -> int:
        return len(self.mean) if isinstance(self.mean, tuple) else 1

    def channel(self, index: int) -> Normalisation:
        """The normalisation of one channel."""
        if self.channels == 1:
            return self
        return Normalisation(self.mean[index], self.std[index])

    def _values(self, ndim: int, channel_axis: int | None) -> tuple:
        if self.channels == 1:
            return np.float32(self.mean), np.float32(self.std)
        if channel_axis is None:
            raise ValueError("a normalisation of several channels needs the channel axis")
        shape = [1] * ndim
        shape[channel_axis] = self.channels
        return (np.asarray(self.mean, np.float32).reshape(shape), np.asarray(self.std, np.float32).reshape(shape))

    def forward(self, array: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        mean, std = self._values(array.ndim, channel_axis)
        return ((array - mean) / std).astype(np.float32, copy=False)

    def inverse(self, array: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        array = np.asarray(array, dtype=np.float32)
        mean, std = self._values(array.ndim, channel_axis)
        return (array * std + mean).astype(np.float32, copy=False)
