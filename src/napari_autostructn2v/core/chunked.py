"""Denoising of arrays larger than memory: lazily as a dask array, or from one OME-Zarr store into another.

Each chunk is denoised with a margin of its neighbours (`dask.array.map_overlap`) at least as wide
as the tiled denoiser's own margin (wider for a model that whitens its input), so chunk borders
never show: the result equals `denoise` on the whole array. A model that removes line offsets
(core.banding) has each plane's offsets measured as `denoise` measures them (on a central band of
the whole plane, read when the plane is first computed) and removed before the chunks are cut.
Chunk origins are kept on multiples of the network's pooling factor, which the equality also needs.
Memory holds a few chunks and their margins, whatever the size of the array.
Y and X are chunked, and Z too for a 3D network; channels (C) are never split, since every channel
of a pixel goes through the network together; other axes are taken slice by slice.

`denoise_zarr` writes the result chunk by chunk into a new OME-Zarr store (OME-NGFF 0.4, zarr
format 2) and records what it is doing in the store's attributes: run again after an interruption,
it keeps the chunks already written and computes only the others.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .axes import Layout, layout
from .banding import LINES, lines_band, row_offsets
from .errors import InputError
from .images import check_image
from .inference import check_model_fits, check_tiling, denoise, model_axes
from .model import DenoisingModel, check_model
from .tiling import CHUNKED_TILES, DEFAULT_CHUNKS, network_default

OUTPUT_LEVEL = "0"  # the path of the denoised array inside the output group
STATE_KEY = "autostructn2v"  # the store attribute that records the run
AXIS_NAMES = ("t", "c", "z", "y", "x")  # OME-NGFF order; plain arrays get the last len(shape) names
COLOUR_RESIDUE = 1e-6  # what is left of a chunk edge's colouring start at the margin's end (64 px at rho 0.8)


def _require(module: str):
    """Import an optional dependency, or raise InputError saying how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"zarr stores and dask clusters need the optional package {module.split('.')[0]}: "
                         "pip install 'napari-autostructn2v[zarr]'.") from None


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def processing_chunks(length: int, chunk: int, margin: int, multiple: int) -> tuple[int, ...]:
    """Chunk sizes along a Y or X axis of `length`: multiples of `multiple` (the pooling factor) so that
    every chunk starts on the network's grid, and a last chunk smaller than `margin` joins the one before
    (map_overlap needs chunks at least as large as the margin)."""
    size = max(_round_up(chunk, multiple), _round_up(margin, multiple))
    sizes = [size] * (length // size)
    rest = length - size * len(sizes)
    if rest:
        if sizes and rest < margin:
            sizes[-1] += rest
        else:
            sizes.append(rest)
    return tuple(sizes)


def _margin(model: DenoisingModel, overlap: int) -> int:
    """The chunks' margin: the tiles' overlap, and for a model that whitens its input (core.whitening) also
    the reach of the colouring, whose start at a chunk's edge fades as rho**distance."""
    rhos = [whitening.rho for whitening in model.whitening or () if whitening is not None]
    reach = math.ceil(math.log(COLOUR_RESIDUE) / math.log(max(rhos))) if rhos else 0
    return _round_up(max(overlap, reach), 2**model.net.depth)


def chunked_settings(model: DenoisingModel, tile_size: int | None, chunk: int | None) -> tuple[int, int]:
    """`tile_size` and `chunk`, or the defaults of the model's network."""
    network = model.config.network
    return network_default(tile_size, network, CHUNKED_TILES), network_default(chunk, network, DEFAULT_CHUNKS)


def _chunked_letters(model: DenoisingModel) -> str:
    """The axes cut into chunks with margins: the plane, and Z for a 3D network."""
    return "ZYX" if model.net.dims == 3 else "YX"


def _denoise_block(block: np.ndarray, model: DenoisingModel, tile_size: int, overlap: int, batch_size: int,
                   axes: str, blind_spot: bool, input_chunks: tuple[tuple[int, ...], ...], margins: dict[int, int],
                   block_info=None) -> np.ndarray:
    """One block with its margins (`margins` per axis, none before the first block) of an array chunked as
    `input_chunks`; blind-spot inference is told where the block lies, so that it equals that part of the whole's."""
    index = block_info[0]["chunk-location"]
    starts = [sum(sizes[:i]) - (margins[axis] if i else 0)
              for axis, (sizes, i) in enumerate(zip(input_chunks, index))]
    origin = tuple(starts[axes.index(letter)] for letter in _chunked_letters(model))
    return denoise(model, block, tile_size, overlap, batch_size, axes=axes, blind_spot=blind_spot, origin=origin,
                   remove_banding=False)


def _check_array_like(image, name: str = "image", axes: str | None = None) -> Layout:
    """The checks of `canonical_image` that need only the shape and type (a zero-stride view stands for the
    data), and the image's Layout for `axes`."""
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        raise InputError(f"{name} must be an array (numpy, dask or zarr); got {type(image).__name__}.")
    found = layout(np.broadcast_to(np.zeros((), image.dtype), image.shape), axes, name)
    checked_shape = image.shape if axes is None else found.canonical_shape  # as canonical_image checks
    check_image(np.broadcast_to(np.zeros((), image.dtype), checked_shape), name, finite=False)
    return found


def denoise_lazy(model: DenoisingModel, image, tile_size: int | None = None, overlap: int = 32, batch_size: int = 4,
                 chunk: int | None = None, axes: str | None = None, blind_spot: bool = True):
    """A dask array that computes the denoised float32 `image` (numpy, dask or zarr) chunk by chunk.

    Nothing runs until it is computed (or shown); any part equals the same part of
    `denoise(model, image, axes=axes, blind_spot=blind_spot)`. `axes` as for `denoise` (None: the model's
    training axes when they fit, else a 2D image or a stack of planes). Y and X (and Z for a 3D network)
    are processed in chunks of about `chunk` pixels (None: 512, or 128 for a 3D network), channels whole, the other axes
    slice by slice (or as the dask input is chunked). `tile_size` None: 256, or 96 for a 3D network.
    """
    import dask.array as da

    check_model(model)
    tile_size, chunk = chunked_settings(model, tile_size, chunk)
    check_tiling(tile_size, overlap, batch_size, model.net.depth)
    found = _check_array_like(image, axes=model_axes(model, image, axes))
    check_model_fits(model, found)
    multiple, margin = 2**model.net.depth, _margin(model, overlap)
    chunked = _chunked_letters(model)
    if isinstance(image, da.Array):
        array = image
    else:
        array = da.from_array(image, chunks=tuple(-1 if letter in chunked + "C" else 1 for letter in found.axes),
                              asarray=True)
    chunks = tuple(processing_chunks(size, chunk, margin, multiple) if letter in chunked
                   else (size,) if letter == "C" else sizes
                   for letter, size, sizes in zip(found.axes, array.shape, array.chunks))
    array = array.rechunk(chunks)
    if model.banding is not None:
        array = _offsets_removed(array, model.banding, found.axes)
    depth = {axis: margin if letter in chunked and len(chunks[axis]) > 1 else 0
             for axis, letter in enumerate(found.axes)}
    return da.map_overlap(_denoise_block, array, depth=depth, boundary="none", trim=True, dtype=np.float32,
                          meta=np.empty((0,) * array.ndim, np.float32), model=model, tile_size=tile_size,
                          overlap=overlap, batch_size=batch_size, axes=found.axes, blind_spot=blind_spot,
                          input_chunks=array.chunks, margins=depth)


def _offsets_removed(array, banding: list[tuple[str, ...]], axes: str):
    """The dask `array` (axes ending in YX) in float32 less each plane's line offsets, as `denoise` removes them:
    per plane, each offset vector is computed from its central band when first needed."""
    import dask
    import dask.array as da

    result = source = array.astype(np.float32)  # measured in float32, as `denoise` measures them
    channel_axis = axes.find("C")
    height, width = array.shape[-2:]
    for name, shape in zip(LINES, ((height, 1), (1, width))):
        if not any(name in lines for lines in banding):
            continue
        vectors = []
        for index in np.ndindex(array.shape[:-2]):
            if name in banding[index[channel_axis] if channel_axis >= 0 else 0]:
                offsets = dask.delayed(row_offsets)(lines_band(source[index], name))
                vectors.append(da.from_delayed(offsets, (max(shape),), np.float64).astype(np.float32))
            else:
                vectors.append(da.zeros(max(shape), np.float32))
        offsets = da.stack(vectors).reshape(*array.shape[:-2], *shape)
        result = result - offsets.rechunk(tuple(sizes if size > 1 else (1,) for sizes, size in
                                                zip(result.chunks, offsets.shape)))
    return result


# ---------------------------------------------------------------- OME-Zarr stores


@dataclass
class ZarrImage:
    """The full-resolution array of a zarr store, and the OME-NGFF axes and scale found with it."""

    array: object  # zarr.Array
    axes: list[dict]
    scale: list[float]
    name: str
    described: bool = True  # the axes come from the store's metadata (False: a bare array's default names)

    @property
    def letters(self) -> str | None:
        """The axes in this package's letters (e.g. 'TCYX') when the metadata names each of them t, c, z, y
        or x once; None otherwise."""
        names = [str(axis.get("name", "")).lower() for axis in self.axes]
        if not self.described or len(names) != self.array.ndim or len(set(names)) != len(names) \
                or not set(names) <= set(AXIS_NAMES):
            return None
        return "".join(names).upper()


def _multiscales(attrs) -> list | None:
    ome = attrs.get("ome")
    if isinstance(ome, dict) and "multiscales" in ome:  # OME-NGFF 0.5 (zarr format 3)
        return ome["multiscales"]
    return attrs.get("multiscales")  # OME-NGFF 0.4 and earlier


def open_zarr_image(path: str | Path) -> ZarrImage:
    """Open an array, or the first (full-resolution) level of an OME-Zarr multiscale group, read-only."""
    zarr = _require("zarr")

    path = Path(path)
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as err:  # zarr raises several kinds for a folder that is not a store
        raise InputError(f"{path} could not be opened as a zarr store ({err}).") from None
    if isinstance(node, zarr.Array):
        return ZarrImage(node, _default_axes(node.ndim), [1.0] * node.ndim, path.name, described=False)
    multiscales = _multiscales(node.attrs)
    if not multiscales:
        arrays = sorted(name for name, _ in node.arrays())
        hint = f" (it holds {', '.join(arrays[:5])})" if arrays else ""
        raise InputError(f"{path} is a zarr group without OME-NGFF multiscales metadata; give the path of the "
                         f"array inside it, e.g. {path / (arrays[0] if arrays else 'NAME')}{hint}.")
    first = multiscales[0]
    dataset = first["datasets"][0]
    array = node[dataset["path"]]
    axes = first.get("axes") or _default_axes(array.ndim)
    axes = [{"name": axis} if isinstance(axis, str) else dict(axis) for axis in axes]  # 0.3 lists names only
    scale = [1.0] * array.ndim
    for transform in dataset.get("coordinateTransformations", []):
        if transform.get("type") == "scale":
            scale = [float(value) for value in transform["scale"]]
    return ZarrImage(array, axes, scale, first.get("name") or path.name)


def _default_axes(ndim: int) -> list[dict]:
    if not 2 <= ndim <= len(AXIS_NAMES):
        raise InputError(f"a zarr array of {ndim} axes cannot be written as OME-Zarr (2 to 5 axes, t c z y x); "
                         "give a 2D image or a stack of up to 3 leading axes.")
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    return [{"name": name, "type": kinds[name]} for name in AXIS_NAMES[-ndim:]]


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (a model), to recognise the run a partial output belongs to."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ResumeError(InputError):
    """An existing output store cannot be resumed (finished, of another run, or not ours)."""


def _run_state(source: Path, image: ZarrImage, model_digest: str, tile_size: int, overlap: int,
               chunk: int, axes: str, blind_spot: bool) -> dict:
    return {"source": str(source.resolve()), "shape": list(image.array.shape), "model_sha256": model_digest,
            "tile_size": tile_size, "overlap": overlap, "chunk": chunk, "axes": axes, "blind_spot": blind_spot,
            "complete": False}


def _open_output(target: Path, state: dict, image: ZarrImage, chunks: tuple[int, ...], overwrite: bool):
    """The output array: a new store, or the one an interrupted run of the same job left (resumed).

    An existing target that is not a zarr group is never replaced, even with `overwrite`.
    """
    zarr = _require("zarr")
    if target.exists() and not (target / ".zgroup").is_file():
        raise ResumeError(f"{target} exists and is not a zarr store written by autostructn2v; it is never "
                          "replaced, even with --overwrite. Choose another name.")
    if target.exists() and not overwrite:
        try:
            previous = zarr.open_group(str(target), mode="r").attrs.get(STATE_KEY)
        except Exception:
            previous = None
        if not isinstance(previous, dict):
            raise ResumeError(f"{target} exists and was not written by autostructn2v; add --overwrite to replace "
                              "it, or choose another name.")
        if previous.get("complete"):
            raise ResumeError(f"{target} exists and is complete; add --overwrite to replace it, or choose "
                              "another name.")
        different = [key for key in state if key != "complete" and previous.get(key) != state[key]]
        if different:
            raise ResumeError(f"{target} is the partial output of another run (different {', '.join(different)}); "
                              "add --overwrite to start again, or choose another name.")
        return zarr.open_group(str(target), mode="r+")[OUTPUT_LEVEL], True
    group = zarr.open_group(str(target), mode="w", zarr_format=2)
    array = group.create_array(OUTPUT_LEVEL, shape=image.array.shape, chunks=chunks, dtype="float32",
                               fill_value=float("nan"), chunk_key_encoding={"name": "v2", "separator": "/"})
    group.attrs.update({
        "multiscales": [{
            "version": "0.4",
            "name": f"{image.name} denoised",
            "axes": image.axes,
            "datasets": [{"path": OUTPUT_LEVEL,
                          "coordinateTransformations": [{"type": "scale", "scale": image.scale}]}],
        }],
        STATE_KEY: state,
    })
    return array, False


def _written(target: Path, array, chunk_coords: tuple[int, ...]) -> bool:
    return (target / OUTPUT_LEVEL / array.metadata.encode_chunk_key(chunk_coords)).is_file()


def _write_block(block: np.ndarray, target, region: tuple[slice, ...]) -> int:
    target[region] = block
    return 1


@dataclass
class ZarrRun:
    """What `denoise_zarr` did: blocks computed now, blocks found already written, and whether it resumed."""

    computed: int
    skipped: int
    resumed: bool


def denoise_zarr(model: DenoisingModel, source: str | Path, target: str | Path, *, model_digest: str = "",
                 tile_size: int | None = None, overlap: int = 32, batch_size: int = 4, chunk: int | None = None,
                 scheduler: str = "threads", workers: int = 1, overwrite: bool = False,
                 on_block: Callable[[int, int], None] | None = None, axes: str | None = None,
                 blind_spot: bool = True) -> ZarrRun:
    """Denoise the full-resolution array of the zarr store `source` into a new OME-Zarr store `target`.

    `axes`, `tile_size`, `chunk` and `blind_spot` as for `denoise_lazy`; without `axes`, the store's OME-NGFF
    axis names are read as axes (t, c, z, y, x: 'TCZYX') and copied to the output. The output is chunked as the
    processing is, one channel per chunk.
    `scheduler` is "threads", "processes" (local dask schedulers with `workers` workers) or the address
    of a running dask.distributed scheduler. `on_block(done, total)` is called after each block. An
    existing `target` left by an interrupted run with the same source, model (`model_digest`) and
    settings is resumed; otherwise an existing target raises ResumeError unless `overwrite`.
    """
    import dask
    import dask.array as da

    check_model(model)
    tile_size, chunk = chunked_settings(model, tile_size, chunk)
    source, target = Path(source), Path(target)
    image = open_zarr_image(source)
    found = _check_array_like(image.array, str(source), model_axes(model, image.array, axes or image.letters))
    check_model_fits(model, found)
    check_tiling(tile_size, overlap, batch_size, model.net.depth)
    multiple, margin = 2**model.net.depth, _margin(model, overlap)
    side = max(_round_up(chunk, multiple), margin)
    zarr_chunks = tuple(min(size, side) if letter in _chunked_letters(model) else 1
                        for letter, size in zip(found.axes, image.array.shape))
    state = _run_state(source, image, model_digest, tile_size, overlap, chunk, found.axes, blind_spot)
    output, resumed = _open_output(target, state, image, zarr_chunks, overwrite)
    lazy = denoise_lazy(model, da.from_zarr(image.array, chunks=zarr_chunks), tile_size, overlap, batch_size, chunk,
                        found.axes, blind_spot)
    blocks = lazy.to_delayed().ravel()
    regions = list(_block_regions(lazy.chunks))
    pending = list(zip(blocks, regions))
    if resumed:  # a new store has no chunk yet: only a resumed one is looked at on disk
        pending = [(block, region) for block, region in pending
                   if not all(_written(target, output, coords) for coords in _chunk_coords(region, output.chunks))]
    skipped = len(regions) - len(pending)
    tasks = [dask.delayed(_write_block)(block, output, region) for block, region in pending]
    total = len(regions)

    def report(done: int) -> None:
        if on_block is not None:
            on_block(skipped + done, total)

    report(0)
    _compute(tasks, scheduler, workers, report)
    _require("zarr").open_group(str(target), mode="r+").attrs[STATE_KEY] = {**state, "complete": True}
    return ZarrRun(len(tasks), skipped, resumed)


def _block_regions(chunks: tuple[tuple[int, ...], ...]):
    """The region (a tuple of slices) of each block of a dask array, in `to_delayed().ravel()` order."""
    starts = [np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) for sizes in chunks]
    for index in np.ndindex(*(len(sizes) for sizes in chunks)):
        yield tuple(slice(int(starts[axis][i]), int(starts[axis][i] + chunks[axis][i])) for axis, i in enumerate(index))


def _chunk_coords(region: tuple[slice, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The coordinates of the zarr chunks that `region` covers."""
    return list(itertools.product(*(range(part.start // size, math.ceil(part.stop / size))
                                    for part, size in zip(region, chunks))))


def _compute(tasks: list, scheduler: str, workers: int, report: Callable[[int], None]) -> None:
    """Run the write tasks on a local dask scheduler or a distributed cluster, reporting each one done."""
    if not tasks:
        return
    if scheduler in ("threads", "processes", "synchronous"):
        import dask
        from dask.callbacks import Callback

        keys = {task.key for task in tasks}
        done = [0]

        def finished(key, result, dsk, state, worker_id) -> None:
            if key in keys:
                done[0] += 1
                report(done[0])

        with Callback(posttask=finished):
            dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
        return
    distributed = _require("distributed")
    Client, as_completed = distributed.Client, distributed.as_completed

    with Client(scheduler) as client:
        for count, future in enumerate(as_completed(client.compute(tasks)), start=1):
            future.result()
            report(count)
