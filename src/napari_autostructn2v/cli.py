"""The `autostructn2v` command line: the same core as the napari widgets, for scripts and clusters."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import tifffile
from tqdm import tqdm

from .core.config import Config, ConfigError, split_epochs
from .core.images import InputError, as_slices, check_image
from .core.inference import denoise_steps
from .core.mask import estimate_struct_mask
from .core.model import DenoisingModel, ModelFileError, load_model, save_model
from .core.roi import count_windows, select_roi_patches
from .core.sample import make_sample
from .core.training import Done, EpochEnd, MaskEstimated, StageStarted, Step, train


class CommandError(Exception):
    """A problem with the command's arguments or files, reported without a traceback."""


def _read(path: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise CommandError(f"{file} does not exist.")
    try:
        return tifffile.imread(file)
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise CommandError(f"{file} could not be read as a TIFF image ({err}).") from None


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image)


def _plane(image: np.ndarray, index: int) -> np.ndarray:
    planes = as_slices(check_image(image))
    if not 0 <= index < len(planes):
        raise CommandError(f"--slice {index} is out of range: the image has {len(planes)} 2D slice(s).")
    return planes[index]


def _config(args) -> Config:
    config = Config.from_json(args.config) if getattr(args, "config", None) else Config()
    if getattr(args, "epochs", None) is not None:
        config.stage1.epochs, config.stage2.epochs = split_epochs(args.epochs)
    if getattr(args, "seed", None) is not None:
        config.seed = args.seed
    if getattr(args, "device", None) is not None:
        config.device = args.device
    return config.validate()


def _train(images: list[np.ndarray], config: Config, quiet: bool = False, on_event=None) -> DenoisingModel:
    """Run training with a progress bar per stage; return the model."""
    bar = None
    for event in train(images, config):
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
            tqdm.write(f"structured mask: {event.estimate.reason}\n{event.estimate.as_text()}", file=sys.stderr)
        elif isinstance(event, Done):
            if bar is not None:
                bar.close()
            return event.model
    raise CommandError("training ended without a model")


def _denoise(model: DenoisingModel, image: np.ndarray, tile_size: int, quiet: bool = False,
             desc: str = "denoise") -> np.ndarray:
    steps = denoise_steps(model, image, tile_size=tile_size)
    with tqdm(desc=desc, unit="tile", disable=quiet, file=sys.stderr) as bar:
        while True:
            try:
                done, total = next(steps)
            except StopIteration as finished:
                return finished.value
            bar.total = total
            bar.update(done - bar.n)


def cmd_roi(args) -> None:
    image = _plane(_read(args.image), args.slice)
    patches = select_roi_patches(image, args.patch_size, args.threshold, args.scale_factor, args.background,
                                 args.overlap)
    if args.json:
        print(json.dumps({"patches": patches.tolist(), "patch_size": args.patch_size}))
    else:
        total = count_windows(image, args.patch_size, args.scale_factor, args.overlap)
        kind = "background" if args.background else "structure"
        print(f"{len(patches)} of {total} patches selected ({kind}, threshold {args.threshold})")


def cmd_mask(args) -> None:
    estimate = estimate_struct_mask(_read(args.image))
    if args.json:
        print(json.dumps({"mask": estimate.mask.astype(int).tolist(), "reason": estimate.reason}))
    else:
        print(estimate.as_text())
        print(estimate.reason)


def cmd_train(args) -> None:
    images = [_read(path) for path in args.images]
    model = _train(images, _config(args), args.quiet)
    print(f"model saved to {save_model(model, args.output)}")


def _outputs(inputs: list[str], output: str) -> list[Path]:
    if len(inputs) == 1 and Path(output).suffix.lower() in (".tif", ".tiff"):
        return [Path(output)]
    return [Path(output) / (Path(path).stem + "_denoised.tif") for path in inputs]


def cmd_denoise(args) -> None:
    model = load_model(args.model, device=args.device or "auto")
    for path, target in zip(args.images, _outputs(args.images, args.output)):
        _write(target, _denoise(model, _read(path), args.tile_size, args.quiet, desc=Path(path).name))
        print(f"{path} -> {target}")


def cmd_run(args) -> None:
    image = _read(args.image)
    model = _train([image], _config(args), args.quiet)
    if args.save_model:
        save_model(model, args.save_model)
    target = _outputs([args.image], args.output)[0]
    _write(target, _denoise(model, image, args.tile_size, args.quiet))
    print(f"{args.image} -> {target}")


def cmd_demo(args) -> None:
    from skimage.metrics import peak_signal_noise_ratio as psnr

    out = Path(args.output)
    clean, noisy = make_sample((args.size, args.size), noise="horizontal", sigma=0.1, seed=args.seed)
    config = Config(seed=args.seed, device=args.device or "auto")
    stage1_epochs, stage2_epochs = split_epochs(args.epochs)
    config.stage1.epochs, config.stage2.epochs = max(1, stage1_epochs), max(1, stage2_epochs)
    for stage in (config.stage1, config.stage2):
        stage.steps_per_epoch = 40
        stage.patch_size = 64 if args.size >= 256 else 32
    stage1_output = {}
    live_model = {}

    def keep_stage1(event) -> None:
        if isinstance(event, StageStarted):
            live_model["model"] = event.model
        if isinstance(event, MaskEstimated):
            stage1_output["image"] = _denoise(live_model["model"], noisy, args.tile_size, quiet=True)

    model = _train([noisy], config.validate(), args.quiet, on_event=keep_stage1)
    final = _denoise(model, noisy, args.tile_size, args.quiet)
    stage1 = stage1_output["image"]
    for name, image in (("clean", clean), ("noisy", noisy), ("stage1_n2v", stage1), ("final_structn2v", final)):
        _write(out / f"{name}.tif", image)
    _write_comparison(out / "comparison.png", [noisy, stage1, final, clean])
    save_model(model, out / "model.pt")
    print(f"PSNR against the clean image (data range 1), outputs in {out}:")
    for name, image in (("noisy input", noisy), ("stage 1 (N2V)", stage1), ("final (structN2V)", final)):
        print(f"  {name:<18} {psnr(clean, image, data_range=1.0):6.2f} dB")
    mask = model.struct_mask if model.struct_mask is not None else np.ones((1, 1), bool)
    print("detected mask:")
    print("\n".join("  " + "".join("#" if v else "." for v in row) for row in mask))


def _write_comparison(path: Path, images: list[np.ndarray]) -> None:
    """Noisy | stage 1 | final | clean side by side, as an 8-bit PNG on a shared grey scale."""
    from skimage.io import imsave

    low, high = np.percentile(images[-1], [0.5, 99.8])
    gap = np.ones((images[0].shape[0], 4))
    row = np.concatenate([part for image in images for part in (np.clip((image - low) / (high - low), 0, 1), gap)][:-1],
                         axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    imsave(path, (row * 255).astype(np.uint8), check_contrast=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autostructn2v", description=__doc__)
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    commands = parser.add_subparsers(dest="command", required=True)

    roi = commands.add_parser("roi", help="count (or list) the ROI patches of an image")
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
    roi.set_defaults(func=cmd_roi)

    mask = commands.add_parser("mask", help="estimate the structured mask from an image alone")
    mask.add_argument("image")
    mask.add_argument("--json", action="store_true", help='print {"mask": [[0, 1, ...], ...]}')
    mask.set_defaults(func=cmd_mask)

    def training_options(sub) -> None:
        sub.add_argument("--config", help="JSON configuration file (see Config.to_json)")
        sub.add_argument("--epochs", type=int, help="epochs of both stages together, split 1:9 as in the defaults")
        sub.add_argument("--seed", type=int)
        sub.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])

    train_cmd = commands.add_parser("train", help="train on one or more TIFF images and save the model")
    train_cmd.add_argument("images", nargs="+")
    train_cmd.add_argument("-o", "--output", required=True, help="model file to write")
    training_options(train_cmd)
    train_cmd.set_defaults(func=cmd_train)

    denoise_cmd = commands.add_parser("denoise", help="denoise TIFF images with a saved model")
    denoise_cmd.add_argument("images", nargs="+")
    denoise_cmd.add_argument("-m", "--model", required=True)
    denoise_cmd.add_argument("-o", "--output", required=True,
                             help="output TIFF for one image, or a folder (NAME_denoised.tif for each image)")
    denoise_cmd.add_argument("--tile-size", type=int, default=256)
    denoise_cmd.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    denoise_cmd.set_defaults(func=cmd_denoise)

    run = commands.add_parser("run", help="train on an image, then denoise it")
    run.add_argument("image")
    run.add_argument("-o", "--output", required=True, help="output TIFF (or folder)")
    run.add_argument("--save-model", help="also write the model to this file")
    run.add_argument("--tile-size", type=int, default=256)
    training_options(run)
    run.set_defaults(func=cmd_run)

    demo = commands.add_parser("demo", help="denoise the embedded structured-noise sample and report PSNR")
    demo.add_argument("-o", "--output", default="demo_output", help="folder for the TIFFs and the PNG")
    demo.add_argument("--size", type=int, default=256, help="side of the sample image (at least 128)")
    demo.add_argument("--epochs", type=int, default=20,
                      help="epochs of both stages together (40 steps each), split 1:9; each stage gets at least one")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--tile-size", type=int, default=256)
    demo.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (CommandError, InputError, ConfigError, ModelFileError) as err:
        print(f"autostructn2v {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
