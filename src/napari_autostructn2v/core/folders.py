"""Folders and glob patterns of TIFF files, and their 2D slices read from disk as they are needed.

`find_tiffs` turns command-line inputs (files, folders, patterns) into files with the path each
output should mirror. `open_planes` gives the slices of one file as `MappedPlane`s when the file
is uncompressed and stored in one block (read through a memory map, never whole), or as arrays
read into memory when it is compressed or scattered (tifffile cannot map those).
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .images import MappedPlane, as_slices, check_image

TIFF_SUFFIXES = (".tif", ".tiff")


@dataclass(frozen=True)
class TiffInput:
    """A TIFF file to read, and its path relative to the folder or pattern it was found by."""

    path: Path
    relative: Path
    in_folder: bool  # found in a folder or by a pattern (its output mirrors `relative`)


def _is_tiff(path: Path) -> bool:
    # hidden files are skipped: partial writes (.name.partial.tif) and macOS resource forks (._name.tif)
    return path.suffix.lower() in TIFF_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _pattern_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard ("data/**/*.tif" -> "data")."""
    parts = Path(pattern).parts
    first_wildcard = next(i for i, part in enumerate(parts) if glob.has_magic(part))
    return Path(*parts[:first_wildcard]) if first_wildcard else Path(".")


def find_tiffs(inputs: list[str]) -> list[TiffInput]:
    """The TIFF files named by `inputs`: files as given, folders searched recursively, glob patterns
    expanded (`**` included), each in sorted order. A folder or pattern without TIFFs raises InputError."""
    found: list[TiffInput] = []
    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(file for file in path.rglob("*") if _is_tiff(file))
            if not files:
                raise InputError(f"{path} is a folder without TIFF files (.tif, .tiff), also in its subfolders.")
            found += [TiffInput(file, file.relative_to(path), True) for file in files]
        elif not path.exists() and glob.has_magic(text):
            root = _pattern_root(text)
            files = sorted(Path(name) for name in glob.glob(text, recursive=True) if _is_tiff(Path(name)))
            if not files:
                raise InputError(f"no TIFF file (.tif, .tiff) matches the pattern {text}.")
            found += [TiffInput(file, file.relative_to(root), True) for file in files]
        else:
            found.append(TiffInput(path, Path(path.name), False))
    return found


def open_planes(path: str | Path) -> tuple[list, bool]:
    """The 2D slices of the first image series of a TIFF file, and whether they are memory-mapped.

    Uncompressed contiguous data gives `MappedPlane`s (nothing read yet); compressed or tiled files
    cannot be mapped and are read whole into memory. Raises InputError for a file that is not a
    usable image (RGB, empty, not an integer or float type).
    """
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise InputError(f"{path} is a TIFF file without an image.")
        series = tif.series[0]
        shape, dtype, offset = tuple(series.shape), series.dtype, series.dataoffset
        file_dtype = np.dtype(dtype).newbyteorder(tif.byteorder)
        if offset is None:
            return list(as_slices(check_image(series.asarray(), str(path), finite=False))), False
    # checks the shape and type only: a view without memory stands for the data
    check_image(np.broadcast_to(np.zeros((), dtype), shape), str(path), finite=False)
    leading = shape[:-2]
    planes = [MappedPlane(Path(path), offset, shape, file_dtype, index) for index in np.ndindex(*leading)]
    return planes, True
