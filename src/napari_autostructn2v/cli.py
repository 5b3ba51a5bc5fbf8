"""The `autostructn2v` command line: the same core as the napari widgets, for scripts and clusters.

Every command checks its inputs and outputs before any work: an output that is an input, two outputs
with the same name, an output that exists (without --overwrite) or cannot be written is refused at the
start, not after training. Outputs are written under a temporary name and renamed when complete.
User errors print one line and exit with status 2 (--debug adds the traceback).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

# only light modules here: `--help` and argument errors must answer without importing torch
from .core.config import DEFAULT_TILES, NETWORKS
from .core.errors import ConfigError, InputError, ModelFileError
from .core.tiling import CHUNKED_TILES, DEFAULT_CHUNKS, network_default

TIFF_SUFFIXES = (".tif", ".tiff")
MODEL_SUFFIXES = (".pt", ".pth")
PACKAGE_SUFFIXES = (".zip",)
DEVICES = ("auto", "cpu", "cuda", "mps")
MIN_MASK_SIDE = 8
AXES_HELP = ("axes of the image, letters from S T C Z Y X (e.g. YX, ZYX, CYX, TZYX); default: YX for 2D, "
             "a stack of 2D planes for more")


class CommandError(Exception):
    """A problem with the command's arguments or files, reported without a traceback."""


USER_ERRORS = (CommandError, InputError, ConfigError, ModelFileError, OSError)


# ---------------------------------------------------------------- inputs


def _input_file(path: str | Path, image: bool = True) -> Path:
    """An existing regular file, or CommandError saying what the path is instead."""
    file = Path(path)
    if file.is_dir() and image:
        raise CommandError(
            f"{file} is a folder; give one TIFF file (train and denoise read every TIFF in a folder)."
        )
    if file.is_dir():
        raise CommandError(f"{file} is a folder; give the model file (.pt) written by training.")
    if not file.exists():
        raise CommandError(f"{file} does not exist.")
    if not file.is_file():
        raise CommandError(f"{file} is not a regular file.")
    return file


def _check_tiff(path: Path) -> None:
    """Open the TIFF header only: a file that is not a TIFF is refused before any work."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                raise CommandError(f"{path} is a TIFF file without an image.")
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise CommandError(f"{path} could not be read as a TIFF image ({_one_line(err)}).") from None


def _read(path: str | Path):
    import tifffile

    file = _input_file(path)
    try:
        return tifffile.imread(file)
    except (tifffile.TiffFileError, ValueError, OSError, IndexError) as err:
        raise CommandError(f"{file} could not be read as a TIFF image ({_one_line(err)}).") from None


def _tiff_inputs(texts: list[str]):
    """The TIFF files of the arguments (files, folders searched recursively, glob patterns), checked."""
    from .core.folders import find_tiffs

    inputs = find_tiffs(texts)
    for found in inputs:
        _input_file(found.path)
    _distinct_inputs([found.path for found in inputs])
    for found in inputs:
        _check_tiff(found.path)
    return inputs


def _training_planes(inputs, quiet: bool) -> list:
    """The 2D slices of every input, memory-mapped where the file allows; a note names files read whole."""
    from .core.folders import open_planes

    planes, in_memory = [], []
    for found in inputs:
        file_planes, mapped = open_planes(found.path)
        planes += file_planes
        if not mapped:
            in_memory.append(found.path.name)
    if in_memory and not quiet and len(inputs) > 1:
        print(f"note: {len(in_memory)} of {len(inputs)} files are compressed or tiled and cannot be memory-mapped; "
              f"they are held in memory during training: {', '.join(in_memory[:5])}"
              f"{' ...' if len(in_memory) > 5 else ''}", file=sys.stderr)
    return planes


def _distinct_inputs(paths: list[Path]) -> None:
    for i, first in enumerate(paths):
        for second in paths[i + 1 :]:
            if os.path.samefile(first, second):
                raise CommandError(f"{first} and {second} are the same file; give each input once.")


# ---------------------------------------------------------------- outputs


def _same_file(first: Path, second: Path) -> bool:
    if first.exists() and second.exists():
        return os.path.samefile(first, second)
    return os.path.normcase(os.path.realpath(first)) == os.path.normcase(os.path.realpath(second))


def _check_writable_folder(folder: Path) -> None:
    """Refuse a folder that cannot be created or written, by creating (and removing) a probe file."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise CommandError(f"cannot create the folder {folder}: {existing} is a file.")
    try:
        descriptor, probe = tempfile.mkstemp(dir=existing, prefix=".autostructn2v-probe-")
        os.close(descriptor)
        os.unlink(probe)
    except OSError as err:
        raise CommandError(
            f"cannot write to {existing} ({err.strerror or err}); choose another output location."
        ) from None


class OutputPlan:
    """The files a command will write, checked together before any work."""

    def __init__(self, inputs: list[Path], overwrite: bool):
        self.inputs = inputs
        self.overwrite = overwrite
        self.paths: list[Path] = []

    def add(self, path: str | Path, option: str, suffixes: tuple[str, ...]) -> Path:
        path = Path(path)
        kinds = {TIFF_SUFFIXES: "TIFF", MODEL_SUFFIXES: "model", PACKAGE_SUFFIXES: "bioimage.io package"}
        kind = kinds.get(suffixes, "output")
        if path.suffix.lower() not in suffixes:
            raise CommandError(f"{option} {path}: a {kind} file name must end in {' or '.join(suffixes)}.")
        if path.is_dir():
            raise CommandError(f"{option} {path} is a folder; give a file name ending in {suffixes[0]}.")
        for source in self.inputs:
            if _same_file(path, source):
                raise CommandError(
                    f"{option} {path} is the input {source}; writing there would replace it. Choose another name."
                )
        for other in self.paths:
            if _same_file(path, other) or str(path).lower() == str(other).lower():
                raise CommandError(f"{option} {path} would be written twice in this command; choose distinct names.")
        if path.exists() and not self.overwrite:
            raise CommandError(f"{option} {path} exists; add --overwrite to replace it, or choose another name.")
        _check_writable_folder(path.parent)
        self.paths.append(path)
        return path


def _denoised_names(inputs: list[Path]) -> tuple[list[str], list[str]]:
    """NAME_denoised.tif per input; inputs sharing a name get their folder's name, then a number, in front.

    Returns the names and a note per renamed input (names compare case-insensitively, as on macOS and Windows).
    """
    names = [f"{path.stem}_denoised.tif" for path in inputs]
    counts = Counter(name.lower() for name in names)
    for index, path in enumerate(inputs):
        if counts[names[index].lower()] > 1:
            names[index] = f"{path.resolve().parent.name}_{path.stem}_denoised.tif"
    taken: set[str] = set()
    for index, name in enumerate(names):
        base, number = name[: -len("_denoised.tif")], 2
        while name.lower() in taken:
            name, number = f"{base}_{number}_denoised.tif", number + 1
        names[index] = name
        taken.add(name.lower())
    plain = [f"{path.stem}_denoised.tif" for path in inputs]
    notes = [f"{path} -> {name} (several inputs share the name {path.name})"
             for path, name, first in zip(inputs, names, plain) if name != first]
    return names, notes


def _image_outputs(plan: OutputPlan, inputs: list[Path], output: str, mirrored: list[Path | None] | None = None
                   ) -> list[Path]:
    """One output TIFF per input: `output` itself (a .tif name, one input) or files in the folder `output`.

    `mirrored` gives, per input found in a folder or by a pattern, its path relative to that folder:
    its output keeps that place in the output folder (sub/a.tif -> OUT/sub/a_denoised.tif).
    """
    out = Path(output)
    mirrored = mirrored or [None] * len(inputs)
    if out.is_dir():
        folder = True
    elif out.suffix.lower() in TIFF_SUFFIXES:
        if len(inputs) > 1:
            raise CommandError(f"-o {out}: with {len(inputs)} input images, -o must be a folder, not a file name.")
        folder = False
    elif out.exists():
        raise CommandError(f"-o {out} exists and is not a folder; give a .tif file name or a folder.")
    elif out.suffix:
        raise CommandError(
            f"-o {out}: outputs are written as TIFF; give a name ending in .tif or .tiff (one input) or a folder "
            "(to use a folder with a dot in its name, create it first)."
        )
    else:
        folder = True
    if not folder:
        return [plan.add(out, "-o", TIFF_SUFFIXES)]
    loose = [path for path, relative in zip(inputs, mirrored) if relative is None]
    names, notes = _denoised_names(loose)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    loose_names = iter(names)
    targets = [out / next(loose_names) if relative is None else out / relative.parent / f"{relative.stem}_denoised.tif"
               for relative in mirrored]
    return [plan.add(target, "-o", TIFF_SUFFIXES) for target in targets]


def _outside_input_folders(output: str, texts: list[str]) -> None:
    """Refuse an output inside an input folder: a later run would read the outputs as inputs."""
    out = Path(output).resolve()
    for text in texts:
        folder = Path(text)
        if folder.is_dir() and out.is_relative_to(folder.resolve()):
            raise CommandError(f"-o {output} is inside the input folder {folder}; a later run would take the "
                               "outputs for inputs. Choose an output outside it.")


def _write_tiff(path: Path, image) -> None:
    import tifffile

    from .core.files import atomic_write

    atomic_write(path, lambda temporary: tifffile.imwrite(temporary, image))


# ---------------------------------------------------------------- shared steps


def _plane(image, index: int, axes: str | None = None):
    """The `index`-th 2D plane (over samples, then Z); with several channels, the mean of the normalised channels."""
    from .core.axes import canonical_image
    from .core.images import Normalisation

    array, _ = canonical_image(image, axes)
    samples, _, planes = array.shape[:3]
    if not 0 <= index < samples * planes:
        raise CommandError(f"--slice {index} is out of range: the image has {samples * planes} 2D slice(s).")
    plane = array[index // planes, :, index % planes]
    if len(plane) == 1:
        return plane[0]
    return Normalisation.fit_channels([plane]).forward(plane, channel_axis=0).mean(axis=0)


def _config_file(args) -> list[Path]:
    """The --config file as an input that no output may replace (after _config has read it)."""
    return [Path(args.config)] if getattr(args, "config", None) and Path(args.config).is_file() else []


def _config(args):
    """The configuration from --config, --epochs, --seed and --device, validated; prints the epoch split."""
    from .core.config import Config, split_epochs

    config = Config.from_json(args.config) if getattr(args, "config", None) else Config()
    if getattr(args, "epochs", None) is not None:
        config.stage1.epochs, config.stage2.epochs = split_epochs(args.epochs)
        if not args.quiet:
            print(f"epochs: {config.stage1.epochs} in stage 1 + {config.stage2.epochs} in stage 2",
                  file=sys.stderr)
    if getattr(args, "seed", None) is not None:
        config.seed = args.seed
    if getattr(args, "device", None) is not None:
        config.device = args.device
    if getattr(args, "network", None) is not None:
        config.network = args.network
    return config.validate()


@functools.cache
def _use_idle_threads() -> int:
    """Give torch, once per command, as many threads as cores were idle when it started."""
    import torch

    from .core.model import idle_threads

    threads = idle_threads()
    torch.set_num_threads(threads)
    return threads


def _train(images, config, quiet: bool = False, on_event=None, axes: str | None = None):
    """Run training with a progress bar per stage; return the model."""
    from tqdm import tqdm

    from .core.training import Done, EpochEnd, MaskEstimated, StageStarted, Step, train

    _use_idle_threads()
    bar = None
    for event in train(images, config, axes=axes):
        if on_event is not None:
            on_event(event)
        if isinstance(event, StageStarted):
            if bar is not None:
                bar.close()
            bar = tqdm(total=event.epochs * event.steps_per_epoch, desc=f"stage {event.stage}", disable=quiet,
                       file=sys.stderr, leave=True)
        elif isinstance(event, Step):
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.4f}", refresh=False)
        elif isinstance(event, EpochEnd):
            bar.set_postfix(loss=f"{event.train_loss:.4f}", val=f"{event.val_loss:.4f}")
        elif isinstance(event, MaskEstimated) and not quiet:
            channel = f" (channel {event.channel})" if event.channels > 1 else ""
            tqdm.write(f"structured mask{channel}: {event.estimate.reason}\n{event.estimate.as_text()}",
                       file=sys.stderr)
        elif isinstance(event, Done):
            if bar is not None:
                bar.close()
            return event.model
    raise CommandError("training ended without a model")


def _denoise(model, image, tile_size: int | None, quiet: bool = False, desc: str = "denoise", axes: str | None = None,
             blind_spot: bool = True):
    from tqdm import tqdm

    from .core.inference import denoise_steps

    _use_idle_threads()
    steps = denoise_steps(model, image, tile_size=tile_size, axes=axes, blind_spot=blind_spot)
    with tqdm(desc=desc, unit="tile", disable=quiet, file=sys.stderr) as bar:
        while True:
            try:
                done, total = next(steps)
            except StopIteration as finished:
                return finished.value
            bar.total = total
            bar.update(done - bar.n)


def _save_model(model, path: Path) -> None:
    from .core.model import save_model

    save_model(model, path)


# ---------------------------------------------------------------- commands


def cmd_roi(args) -> None:
    import json

    from .core.roi import count_windows, select_roi_patches

    image = _plane(_read(args.image), args.slice, args.axes)
    patches = select_roi_patches(image, args.patch_size, args.threshold, args.scale_factor, args.background,
                                 args.overlap)
    if args.json:
        print(json.dumps({"patches": patches.tolist(), "patch_size": args.patch_size}))
    else:
        total = count_windows(image, args.patch_size, args.scale_factor, args.overlap)
        kind = "background" if args.background else "structure"
        print(f"{len(patches)} of {total} patches selected ({kind}, threshold {args.threshold})")


def cmd_mask(args) -> None:
    import json

    from .core.mask import estimate_struct_mask

    image = _read(args.image)  # checked by the estimate, for its axes
    try:
        estimate = estimate_struct_mask(image, axes=args.axes)
    except IndexError:
        if min(image.shape[-2:]) >= MIN_MASK_SIDE:
            raise
        raise CommandError(
            f"{args.image} is {image.shape[-2]}x{image.shape[-1]} pixels: too small to measure the noise "
            f"correlation; use an image at least {MIN_MASK_SIDE} pixels on each side."
        ) from None
    estimates = estimate if isinstance(estimate, list) else [estimate]
    if args.json:
        records = [{"mask": e.mask.astype(int).tolist(), "reason": e.reason} for e in estimates]
        for record, e in zip(records, estimates):
            if e.z_correlation is not None:
                record["z_correlation"] = round(e.z_correlation, 4)
            if e.whitening is not None:
                record["whitening"] = {"axis": e.whitening.axis, "rho": e.whitening.rho}
            if e.banding:
                record["banding"] = list(e.banding)
            if e.recorruption is not None:
                record["recorruption"] = {"pixels": e.recorruption.pixels,
                                          "variance_ratio": round(e.recorruption.variance_ratio, 4),
                                          "brightness_ratio": round(e.recorruption.brightness_ratio, 4)}
        print(json.dumps({"channels": records} if isinstance(estimate, list) else records[0]))
        return
    for index, e in enumerate(estimates):
        if isinstance(estimate, list):
            print(f"channel {index}:")
        print(e.as_text())
        print(e.reason)


def cmd_train(args) -> None:
    inputs = _tiff_inputs(args.images)
    sources = [found.path for found in inputs]
    config = _config(args)
    plan = OutputPlan(sources + _config_file(args), args.overwrite)
    target = plan.add(args.output, "-o", MODEL_SUFFIXES)
    if args.axes is None:  # planes of uncompressed files stay on disk, read patch by patch
        images = _training_planes(inputs, args.quiet)
    else:  # the axes apply to whole files
        images = [_read(path) for path in sources]
    model = _train(images, config, args.quiet, axes=args.axes)
    _save_model(model, target)
    print(f"model saved to {target}")


def cmd_denoise(args) -> None:
    if any(_is_zarr(path) for path in args.images):
        _denoise_zarr(args)
        return
    if args.scheduler is not None:
        raise CommandError("--scheduler applies to zarr inputs (in.zarr); TIFF images are denoised here, "
                           "one at a time.")
    inputs = _tiff_inputs(args.images)
    sources = [found.path for found in inputs]
    model_file = _input_file(args.model, image=False)
    plan = OutputPlan([*sources, model_file], args.overwrite)
    _outside_input_folders(args.output, args.images)
    targets = _image_outputs(plan, sources, args.output,
                             [found.relative if found.in_folder else None for found in inputs])

    from .core.inference import check_tiling
    from .core.model import load_model

    model = load_model(model_file, device=args.device or "auto")
    tile_size = network_default(args.tile_size, model.config.network)
    check_tiling(tile_size, depth=model.net.depth)
    for source, target in zip(sources, targets):
        _write_tiff(target, _denoise(model, _read(source), tile_size, args.quiet, desc=source.name,
                                     axes=args.axes, blind_spot=not args.direct_inference))
        print(f"{source} -> {target}")


def _is_zarr_node(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("zarr.json", ".zgroup", ".zarray"))


def _is_zarr(path: str) -> bool:
    """Whether `path` is named like a zarr store or is one (zarr format 2 or 3, an array or a group)."""
    return Path(path).name.lower().endswith(".zarr") or _is_zarr_node(Path(path))


def _zarr_target(source: Path, output: str) -> Path:
    """The output store: a .zarr name apart from the input (core.chunked decides about an existing one)."""
    target = Path(output)
    if not target.name.lower().endswith(".zarr"):
        raise CommandError(f"-o {target}: a zarr input is written as OME-Zarr; give a name ending in .zarr "
                           "(or .ome.zarr).")
    source_path, target_path = source.resolve(), target.resolve()
    while _is_zarr_node(source_path.parent):  # an array inside a group: the whole store is the input
        source_path = source_path.parent
    if target_path == source_path or target_path.is_relative_to(source_path) or source_path.is_relative_to(
            target_path):
        raise CommandError(f"-o {target} is or contains the input {source}; writing there would change it. "
                           "Choose another name.")
    _check_writable_folder(target.parent)
    return target


def _denoise_zarr(args) -> None:
    """denoise in.zarr -o out.zarr: chunk by chunk on a dask scheduler, resuming an interrupted run."""
    if len(args.images) != 1:
        raise CommandError("a zarr input is denoised on its own: give one zarr store per command.")
    source = Path(args.images[0])
    if not source.is_dir():
        raise CommandError(f"{source} does not exist or is not a zarr store (a folder).")
    model_file = _input_file(args.model, image=False)
    target = _zarr_target(source, args.output)

    from tqdm import tqdm

    from .core.chunked import chunked_settings, denoise_zarr, file_digest
    from .core.inference import check_tiling
    from .core.model import load_model

    model = load_model(model_file, device=args.device or "auto")
    tile_size, chunk = chunked_settings(model, args.tile_size, args.chunk_size)
    check_tiling(tile_size, depth=model.net.depth)
    bars = []  # opened at the first report: a refused output shows no bar

    def progress(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(desc=source.name, total=total, unit="chunk", disable=args.quiet, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    try:
        run = denoise_zarr(model, source, target, model_digest=file_digest(model_file), tile_size=tile_size,
                           chunk=chunk, scheduler=args.scheduler or "threads", workers=args.workers,
                           overwrite=args.overwrite, on_block=progress, axes=args.axes,
                           blind_spot=not args.direct_inference)
    except KeyboardInterrupt:
        print(f"note: the chunks written so far are kept in {target}; run the same command again to resume.",
              file=sys.stderr)
        raise
    finally:
        for bar in bars:
            bar.close()
    if run.resumed:
        print(f"resumed: {run.skipped} chunk(s) were already written, {run.computed} computed now", file=sys.stderr)
    print(f"{source} -> {target}")


def cmd_run(args) -> None:
    source = _input_file(args.image)
    _check_tiff(source)
    config = _config(args)
    plan = OutputPlan([source, *_config_file(args)], args.overwrite)
    model_target = plan.add(args.save_model, "--save-model", MODEL_SUFFIXES) if args.save_model else None
    (target,) = _image_outputs(plan, [source], args.output)

    from .core.inference import check_tiling

    check_tiling(network_default(args.tile_size, config.network), depth=config.depth)
    image = _read(source)
    model = _train([image], config, args.quiet, axes=args.axes)
    if model_target is not None:
        _save_model(model, model_target)
        print(f"model saved to {model_target}")
    _write_tiff(target, _denoise(model, image, args.tile_size, args.quiet, axes=args.axes,
                                 blind_spot=not args.direct_inference))
    print(f"{source} -> {target}")


DEMO_IMAGES = ("clean", "noisy", "stage1_n2v", "final_structn2v")


def cmd_demo(args) -> None:
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise CommandError(f"-o {out} is a file; the demo writes several files into a folder.")
    plan = OutputPlan([], args.overwrite)
    targets = {name: plan.add(out / f"{name}.tif", "-o", TIFF_SUFFIXES) for name in DEMO_IMAGES}
    comparison = plan.add(out / "comparison.png", "-o", (".png",))
    model_target = plan.add(out / "model.pt", "-o", MODEL_SUFFIXES)

    from skimage.metrics import peak_signal_noise_ratio as psnr

    from .core.config import Config, split_epochs
    from .core.inference import check_tiling
    from .core.sample import make_sample
    from .core.training import MaskEstimated, StageStarted

    config = Config(seed=args.seed, device=args.device or "auto")
    config.stage1.epochs, config.stage2.epochs = split_epochs(args.epochs)
    for stage in (config.stage1, config.stage2):
        stage.steps_per_epoch = 40
        stage.patch_size = 64 if args.size >= 256 else 32
    config.validate()
    check_tiling(args.tile_size, depth=config.depth)
    if not args.quiet:
        print(f"epochs: {config.stage1.epochs} in stage 1 + {config.stage2.epochs} in stage 2",
              file=sys.stderr)
    clean, noisy = make_sample((args.size, args.size), noise="horizontal", sigma=0.1, seed=args.seed)
    stage1_output = {}
    live_model = {}

    def keep_stage1(event) -> None:
        if isinstance(event, StageStarted):
            live_model["model"] = event.model
        if isinstance(event, MaskEstimated):
            stage1_output["image"] = _denoise(live_model["model"], noisy, args.tile_size, quiet=True)
            stage1_output["estimate"] = event.estimate

    model = _train([noisy], config, args.quiet, on_event=keep_stage1)
    final = _denoise(model, noisy, args.tile_size, args.quiet, blind_spot=not args.direct_inference)
    stage1 = stage1_output["image"]
    for name, image in zip(DEMO_IMAGES, (clean, noisy, stage1, final)):
        _write_tiff(targets[name], image)
    _write_comparison(comparison, [noisy, stage1, final, clean])
    _save_model(model, model_target)
    print(f"PSNR against the clean image (data range 1), outputs in {out}:")
    for name, image in (("noisy input", noisy), ("stage 1", stage1), ("final", final)):
        print(f"  {name:<18} {psnr(clean, image, data_range=1.0):6.2f} dB")
    estimate = stage1_output["estimate"]
    print(f"noise: {estimate.reason}")
    print("detected mask (where the noise is correlated):")
    print("\n".join("  " + "".join("#" if v else "." for v in row) for row in estimate.mask))


def _write_comparison(path: Path, images: list) -> None:
    """Noisy | stage 1 | final | clean side by side, as an 8-bit PNG on a shared grey scale."""
    import numpy as np
    from skimage.io import imsave

    from .core.files import atomic_write

    low, high = np.percentile(images[-1], [0.5, 99.8])
    gap = np.ones((images[0].shape[0], 4))
    row = np.concatenate([part for image in images for part in (np.clip((image - low) / (high - low), 0, 1), gap)][:-1],
                         axis=1)
    atomic_write(path, lambda temporary: imsave(temporary, (row * 255).astype(np.uint8), check_contrast=False))


def cmd_export(args) -> None:
    model_file = _input_file(args.model, image=False)
    sources = [model_file]
    if args.image:
        sources.append(_input_file(args.image))
        _check_tiff(sources[-1])
    target = OutputPlan(sources, args.overwrite).add(args.output, "-o", PACKAGE_SUFFIXES)

    from .core.bioimageio import export_bioimageio
    from .core.model import load_model

    model = load_model(model_file)
    image = _read(args.image) if args.image else None
    export_bioimageio(model, target, image, name=args.name, authors=tuple(args.author or ["napari-autostructn2v user"]),
                      license=args.license, axes=args.axes)
    print(f"bioimage.io model package saved to {target}")


def cmd_config(args) -> None:
    from .core.config import Config

    if args.dump:
        print(Config().to_json())
    else:
        config = Config.from_json(Path(args.check))
        print(f"{args.check}: valid; stage 1 {config.stage1.epochs} epochs, stage 2 {config.stage2.epochs} epochs.")


# ---------------------------------------------------------------- parser and entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autostructn2v", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    quiet_help = "no progress bars or epoch split (errors and renamed outputs are still reported)"
    parser.add_argument("-q", "--quiet", action="store_true", help=quiet_help)
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    # the same flags after the command name; SUPPRESS keeps a flag given before it
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help=quiet_help)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func):
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        sub.set_defaults(func=func)
        return sub

    def overwrite_option(sub) -> None:
        sub.add_argument("--overwrite", action="store_true", help="replace existing output files")

    def inference_option(sub) -> None:
        sub.add_argument("--direct-inference", action="store_true",
                         help="predict in one pass on the unmasked image; by default a model with a one-line "
                              "structN2V mask predicts each pixel with its blind spot and mask applied, as in "
                              "training (8 passes per tile), so that the mask's correlated noise cannot leak into "
                              "the output")

    roi = command("roi", "count (or list) the ROI patches of an image", cmd_roi)
    roi.add_argument("image")
    roi.add_argument("--patch-size", type=int, default=64)
    roi.add_argument("--threshold", type=float, default=0.5)
    roi.add_argument("--scale-factor", type=float, default=0.25)
    side = roi.add_mutually_exclusive_group()
    side.add_argument("--background", dest="background", action="store_true", default=True,
                      help="select low-intensity patches (default)")
    side.add_argument("--structure", dest="background", action="store_false", help="select high-intensity patches")
    roi.add_argument("--overlap", type=float, default=0.5)
    roi.add_argument("--slice", type=int, default=0, help="2D slice of a stack to use (default 0)")
    roi.add_argument("--json", action="store_true", help='print {"patches": [[y, x], ...], "patch_size": P}')
    roi.add_argument("--axes", help=AXES_HELP + "; --slice counts planes, channels are averaged")

    mask = command("mask", "estimate the structured mask from an image alone", cmd_mask)
    mask.add_argument("image")
    mask.add_argument("--json", action="store_true",
                      help='print {"mask": [[0, 1, ...], ...], "reason": ...} ("whitening": {"axis", "rho"} when the '
                           'noise is decorrelated, "recorruption": {"pixels", "variance_ratio", "brightness_ratio"} '
                           'when it trains on recorrupted pairs, "banding": ["rows"] when line offsets are removed), '
                           'or {"channels": [{"mask": ...}, ...]} with a C axis')
    mask.add_argument("--axes", help=AXES_HELP + "; with C, one mask per channel; with Z, the correlation along Z too")

    def training_options(sub) -> None:
        sub.add_argument("--config", help="JSON configuration file (start from `autostructn2v config --dump`)")
        sub.add_argument("--epochs", type=int,
                         help="epochs of both stages together (at least 2), split 1:9, at least one per stage")
        sub.add_argument("--seed", type=int, help="random seed, 0 to 2**32 - 1")
        sub.add_argument("--device", choices=DEVICES)
        sub.add_argument("--axes", help=AXES_HELP)
        sub.add_argument("--network", choices=NETWORKS,
                         help="2d: every plane on its own (default); 3d: a 3D network on volumes (axes with Z)")
        overwrite_option(sub)

    inputs_help = ("TIFF files, folders (every .tif/.tiff inside, subfolders included) or quoted glob patterns "
                   "('data/**/*.tif')")
    train_cmd = command("train", "train on TIFF images (files, folders, patterns) and save the model", cmd_train)
    train_cmd.add_argument("images", nargs="+", help=inputs_help + "; uncompressed files are read patch by patch "
                           "through memory maps, so the data may exceed memory")
    train_cmd.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    training_options(train_cmd)

    denoise_cmd = command("denoise", "denoise TIFF images (files, folders, patterns) with a saved model",
                          cmd_denoise)
    denoise_cmd.add_argument("images", nargs="+", help=inputs_help + "; one image in memory at a time")
    denoise_cmd.add_argument("-m", "--model", required=True,
                             help="model file (.pt) or bioimage.io package (.zip) exported by this package")
    denoise_cmd.add_argument(
        "-o", "--output", required=True,
        help="output TIFF (.tif) for one image, or a folder: NAME_denoised.tif for each image "
             "(inputs sharing a name get their folder's name in front; images found in a folder or by a pattern "
             "keep their subfolder)")
    denoise_cmd.add_argument("--tile-size", type=int,
                             help=f"tile side in pixels (default {DEFAULT_TILES['2d']} for TIFF images, "
                                  f"{CHUNKED_TILES['2d']} for zarr stores, where smaller tiles keep the memory of "
                                  f"parallel chunks low; {DEFAULT_TILES['3d']} for a 3D model)")
    denoise_cmd.add_argument("--device", choices=DEVICES)
    denoise_cmd.add_argument("--axes", help=AXES_HELP + " (default: an OME-Zarr store's own axis names, else the "
                                             "training images' axes, when they fit)")
    zarr_options = denoise_cmd.add_argument_group(
        "zarr inputs", "denoise in.zarr -m model.pt -o out.zarr: the full-resolution level, chunk by chunk with "
        "overlap (equal to denoising it whole), into a new OME-Zarr store; run an interrupted command again to "
        "resume it")
    zarr_options.add_argument("--scheduler", help="threads (default) or processes (local dask scheduler), or the "
                              "address of a dask.distributed scheduler (tcp://HOST:PORT)")
    zarr_options.add_argument("--workers", type=_int_range(1, 1024), default=1,
                              help="threads or processes of a local scheduler (default 1)")
    zarr_options.add_argument("--chunk-size", type=_int_range(32, 16384),
                              help=f"side of the output chunks in pixels (default {DEFAULT_CHUNKS['2d']}; "
                                   f"{DEFAULT_CHUNKS['3d']} in Z, Y and X for a 3D model)")
    inference_option(denoise_cmd)
    overwrite_option(denoise_cmd)

    run = command("run", "train on an image, then denoise it", cmd_run)
    run.add_argument("image")
    run.add_argument("-o", "--output", required=True, help="output TIFF (.tif), or a folder for NAME_denoised.tif")
    run.add_argument("--save-model", help="also write the model to this file (.pt)")
    run.add_argument("--tile-size", type=int, help=f"tile side in pixels (default {DEFAULT_TILES['2d']}, "
                     f"{DEFAULT_TILES['3d']} with --network 3d)")
    inference_option(run)
    training_options(run)

    demo = command("demo", "denoise the embedded structured-noise sample and report PSNR", cmd_demo)
    demo.add_argument("-o", "--output", default="demo_output", help="folder for the TIFFs, the PNG and the model")
    demo.add_argument("--size", type=_int_range(128, 4096), default=256,
                      help="side of the sample image, 128 to 4096 (default 256)")
    demo.add_argument("--epochs", type=int, default=20,
                      help="epochs of both stages together (40 steps each, at least 2), split 1:9, "
                           "at least one per stage")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--tile-size", type=int, default=DEFAULT_TILES["2d"])
    demo.add_argument("--device", choices=DEVICES)
    inference_option(demo)
    overwrite_option(demo)

    export = command("export", "write a saved model as a bioimage.io model package (.zip)", cmd_export)
    export.add_argument("model", help="model file written by training (.pt)")
    export.add_argument("-o", "--output", required=True, help="package to write (.zip)")
    export.add_argument("--image", help="TIFF image for the test input and the cover (default: the embedded sample)")
    export.add_argument("--axes", help=AXES_HELP + " of --image (default: the training images' axes, when they fit)")
    export.add_argument("--name", default="autoStructN2V denoiser", help="model name shown by bioimage.io tools")
    export.add_argument("--author", action="append", help="author name (repeat for several)")
    export.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights (default CC-BY-4.0)")
    overwrite_option(export)

    config = command("config", "print the default configuration, or check a configuration file", cmd_config)
    action = config.add_mutually_exclusive_group(required=True)
    action.add_argument("--dump", action="store_true", help="print the default configuration as JSON")
    action.add_argument("--check", metavar="FILE", help="validate a JSON configuration file")
    return parser


def _int_range(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from {low} to {high}, got {value}")
        return value

    return parse


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    prefix = f"autostructn2v {args.command}"
    try:
        args.func(args)
    except BrokenPipeError:  # stdout closed early, as by `| head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted; outputs not yet written were left out.", file=sys.stderr)
        return 130
    except Exception as err:  # the catch-all: one line, never a traceback unless asked for
        if args.debug:
            traceback.print_exc()
        if isinstance(err, USER_ERRORS):
            print(f"{prefix}: error: {_one_line(err)}", file=sys.stderr)
            return 2
        print(f"{prefix}: unexpected error ({type(err).__name__}: {_one_line(err)}); rerun with --debug for the "
              "traceback and please report it.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
