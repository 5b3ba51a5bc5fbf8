"""Axes of an image (letters from S T C Z Y X) and the move to a canonical (N, C, Z, Y, X) array and back.

S (samples), T (time) and leading axes left unnamed are independent samples, merged into N.
C holds channels and Z planes of a volume; an axis that is absent has length 1 in the canonical array.
Without `axes`, a 2D array is YX and a 3D or larger one a stack of planes (S..YX), as before axes existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

LETTERS = "STCZYX"
SAMPLE_LETTERS = "ST"


def check_axes(axes, ndim: int, name: str = "image") -> str:
    """`axes` as an upper-case string of one letter per dimension of an `ndim`-dimensional array.

    None gives the default (YX, or a stack of planes); fewer letters than dimensions name the last
    axes, and the ones before them are independent samples (S).
    """
    if axes is None:
        return "S" * (ndim - 2) + "YX"
    if not isinstance(axes, str):
        raise InputError(f"axes must be a string of letters from {LETTERS} (e.g. 'ZYX'); got {axes!r}.")
    letters = axes.strip().upper()
    unknown = sorted(set(letters) - set(LETTERS))
    if unknown:
        raise InputError(f"axes {axes!r} has unknown letter(s) {''.join(unknown)}; use letters from {LETTERS}.")
    repeated = sorted({letter for letter in letters if letters.count(letter) > 1 and letter != "S"})
    if repeated:
        raise InputError(f"axes {axes!r} names {''.join(repeated)} more than once; each of T, C, Z, Y, X at most once.")
    if "Y" not in letters or "X" not in letters:
        raise InputError(f"axes {axes!r} must include Y and X (the image plane), e.g. 'YX', 'ZYX' or 'CYX'.")
    if len(letters) > ndim:
        raise InputError(
            f"axes {axes!r} names {len(letters)} axes, but the {name} has {ndim} dimensions; give one letter per "
            "dimension (or fewer: unnamed leading axes are independent samples)."
        )
    return "S" * (ndim - len(letters)) + letters


@dataclass(frozen=True)
class Layout:
    """Where an array's axes go in the canonical (N, C, Z, Y, X) order, and the way back."""

    axes: str
    shape: tuple[int, ...]

    @property
    def order(self) -> tuple[int, ...]:
        """The input's axes in canonical order: samples (in input order), then C, Z, Y, X where present."""
        samples = [i for i, letter in enumerate(self.axes) if letter in SAMPLE_LETTERS]
        return (*samples, *(self.axes.index(letter) for letter in "CZYX" if letter in self.axes))

    def size(self, letter: str) -> int:
        """Length of the axis `letter` (1 when absent); S is the number of samples (N)."""
        if letter == "S":
            return int(np.prod([n for n, a in zip(self.shape, self.axes) if a in SAMPLE_LETTERS], dtype=np.int64))
        return self.shape[self.axes.index(letter)] if letter in self.axes else 1

    @property
    def canonical_shape(self) -> tuple[int, int, int, int, int]:
        return tuple(self.size(letter) for letter in "SCZYX")

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """(N, C, Z, Y, X) view of `array` (a copy only where the axes must be reordered)."""
        return np.transpose(array, self.order).reshape(self.canonical_shape)

    def restore(self, canonical: np.ndarray) -> np.ndarray:
        """The inverse of `to_canonical`: an (N, C, Z, Y, X) result in the input's shape and axis order."""
        transposed_shape = tuple(self.shape[i] for i in self.order)
        return np.transpose(canonical.reshape(transposed_shape), np.argsort(self.order))


def layout(image: np.ndarray, axes: str | None = None, name: str = "image") -> Layout:
    """The Layout of `image` for `axes` (checked; None: the default)."""
    return Layout(check_axes(axes, np.ndim(image), name), tuple(np.shape(image)))


def canonical_image(image, axes: str | None = None, name: str = "image",
                    min_size: int | None = None) -> tuple[np.ndarray, Layout]:
    """`image` checked (see `check_image`) as an (N, C, Z, Y, X) array, with the Layout to restore results."""
    from .images import check_image

    array = np.asarray(image)
    if axes is None or array.ndim < 2:  # the checks of a plain image or stack, RGB(A) refusal included
        array = check_image(array, name, min_size)
        found = layout(array, None, name)
        return found.to_canonical(array), found
    found = layout(array, axes, name)
    return check_image(found.to_canonical(array), name, min_size), found
