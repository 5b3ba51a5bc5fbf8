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

    def plane_number(self, index: tuple[int, ...]) -> int:
        """The number of the 2D plane at `index` (over the axes before Y and X) among the planes of the
        canonical array in (N, Z) order, channels aside: how training lists its planes."""
        leading = [i for i, letter in enumerate(self.axes) if letter not in "YX"]
        position = dict(zip(leading, index))
        samples = [i for i, letter in enumerate(self.axes) if letter in SAMPLE_LETTERS]
        sample = int(np.ravel_multi_index([position[i] for i in samples], [self.shape[i] for i in samples])) if samples else 0
        z = position.get(self.axes.index("Z"), 0) if "Z" in self.axes else 0
        return sample * self.size("Z") + z

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


def axes_choices(ndim: int, first: str | None = None) -> list[str]:
    """Every axes string for an `ndim`-dimensional image ending in YX (S repeats, T, C and Z at most once),
    `first` (when among them) first, then the stack of planes, then the rest in alphabetical order."""
    import itertools

    found = sorted({"".join(lead) + "YX" for lead in itertools.product("STCZ", repeat=ndim - 2)
                    if all(lead.count(letter) <= 1 for letter in "TCZ")})
    ordered = [a for a in (first, check_axes(None, ndim)) if a in found]
    return list(dict.fromkeys(ordered + found))


def axes_from_labels(labels) -> str | None:
    """Axes from napari axis labels such as ('z', 'y', 'x') or ('t', 'c', 'y', 'x'); None when they are not
    such letters (napari's default labels are numbers) or do not end in Y, X."""
    letters = "".join(str(label).strip().upper() for label in labels)
    if len(letters) != len(labels) or len(letters) < 2 or not letters.endswith("YX"):
        return None
    try:
        return check_axes(letters, len(letters))
    except InputError:
        return None
