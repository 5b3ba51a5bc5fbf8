"""PSNR after every epoch of one training run on a real-set case: where a longer budget loses quality.

    python -m benchmarks.curve --image cell --family gauss2_h --method "structN2V true mask" --steps 800

For each epoch: the masked validation loss the trainer sees, the PSNR of the whole image denoised in
one pass (`blind_spot=False`) with the live weights, the PSNR after the least-squares fit
`a * output + b` to the clean image, the output's gain (1 / a) and mean offset, with
`--recalibrate-bn N` the PSNR of a copy whose batch-norm statistics are recomputed over N masked
training batches (training itself is not changed), and with `--blind-from E` (from epoch E on) the PSNR
of the spot-grid blind-spot output: every pixel predicted from an input masked around it as in training
(its blind spot and, with structN2V, the mask's pixels replaced), which is what the masked validation
loss judges, where one pass sees the unmasked image.
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch

from napari_autostructn2v import denoise, train
from napari_autostructn2v.core.masking import mask_batch
from napari_autostructn2v.core.training import EpochEnd, StageStarted

from . import real_set
from ._common import limit_threads, markdown_table, stopwatch
from .quality import Budget, both_stages, one_stage_config, ours_config
from .quality_real import quality_metrics, true_mask

METHODS = ("structN2V true mask", "ours")


def output_figures(reference: np.ndarray, output: np.ndarray) -> dict:
    """PSNR, PSNR after the suite's linear fit to the reference, the output's gain against it and its mean offset."""
    metrics = quality_metrics(output, reference)
    return {"psnr": metrics["psnr"], "psnr_fit": metrics["psnr_fit"], "gain": 1 / metrics["fit_a"],
            "offset": float(np.mean(output - reference))}


def recalibrated(model, noisy: np.ndarray, mask, batches: int, batch: int = 16, patch: int = 64):
    """A copy of the model whose batch-norm statistics are the plain mean over `batches` masked batches."""
    twin = copy.deepcopy(model)
    for module in twin.net.modules():
        if isinstance(module, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            module.reset_running_stats()
            module.momentum = None
    rng, generator = np.random.default_rng(1), torch.Generator().manual_seed(2)
    normalised = model.normalisation.forward(noisy[None], channel_axis=0)[0].astype(np.float32)
    twin.net.train()
    with torch.no_grad():
        for _ in range(batches):
            corners = rng.integers(0, np.subtract(normalised.shape, patch) + 1, (batch, 2))
            crops = np.stack([normalised[y : y + patch, x : x + patch] for y, x in corners])[:, None]
            twin.net(mask_batch(torch.from_numpy(crops), 1.0, generator, mask)[0])
    twin.net.eval()
    return twin


def blind_output(model, noisy: np.ndarray, mask) -> np.ndarray:
    """Each pixel's prediction with its own blind spot and mask applied, from passes over a grid of blind
    spots spaced so that their masks neither overlap nor touch (the mask's size plus 2 in each axis)."""
    shape = (1, 1) if mask is None else np.shape(mask)
    spacing = [side + 2 for side in shape]
    normalised = torch.from_numpy(model.normalisation.forward(noisy[None], channel_axis=0)[None].astype(np.float32))
    output = torch.zeros(noisy.shape)
    generator = torch.Generator().manual_seed(3)
    model.net.eval()
    with torch.no_grad():
        for dy in range(spacing[0]):
            for dx in range(spacing[1]):
                ys, xs = np.meshgrid(np.arange(dy, noisy.shape[0], spacing[0]), np.arange(dx, noisy.shape[1], spacing[1]),
                                     indexing="ij")
                coords = [torch.from_numpy(ys.ravel()), torch.from_numpy(xs.ravel())]
                spots = (torch.zeros(len(coords[0]), dtype=torch.long), coords)
                inputs, _ = mask_batch(normalised, 1.0, generator, mask, spots=spots)
                output[coords[0], coords[1]] = model.net(inputs)[0, 0][coords[0], coords[1]]
    return model.normalisation.inverse(output.numpy()[None], channel_axis=0)[0]


def run(image: str, family: str, method: str, budget: Budget, seed: int, learning_rate: float | None,
        recalibrate_bn: int, blind_from: int | None = None, log=print) -> list[dict]:
    """One row per epoch (see the module docstring)."""
    noise = real_set.Noise(family, 0.1)
    reference, noisy = real_set.make_case(image, noise, seed)
    if method == "ours":
        config, mask = ours_config(budget, seed), None
    else:
        config, mask = one_stage_config(budget, seed, struct=True), true_mask(noise)
    if learning_rate:
        config = both_stages(config, learning_rate=learning_rate)
    rows, model = [], None
    with stopwatch() as elapsed:
        for event in train(noisy, config, struct_mask=mask):
            if isinstance(event, StageStarted):
                model = event.model
            if not isinstance(event, EpochEnd):
                continue
            row = {"stage": event.stage, "epoch": event.epoch, "val_loss": event.val_loss,
                   **output_figures(reference, denoise(model, noisy, blind_spot=False))}
            if recalibrate_bn:
                twin = recalibrated(model, noisy, model.struct_mask if event.stage == 2 else None, recalibrate_bn)
                row["psnr_bn"] = output_figures(reference, denoise(twin, noisy, blind_spot=False))["psnr"]
            if blind_from is not None and len(rows) >= blind_from:
                row["psnr_blind"] = output_figures(reference, blind_output(
                    model, noisy, model.struct_mask if event.stage == 2 else None))["psnr"]
            model.net.train()
            row["seconds"] = elapsed()
            rows.append(row)
            log(" ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default="cell", choices=[n for names in real_set.IMAGE_CLASSES.values() for n in names])
    parser.add_argument("--family", default="gauss2_h", choices=real_set.FAMILIES)
    parser.add_argument("--method", default=METHODS[0], choices=METHODS)
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--learning-rate", type=float, default=None, help="both stages (default: the Config's)")
    parser.add_argument("--recalibrate-bn", type=int, default=0, metavar="N",
                        help="also report the PSNR with batch-norm statistics recomputed over N batches")
    parser.add_argument("--blind-from", type=int, default=None, metavar="E",
                        help="from epoch E on, also the PSNR of the blind-spot output (slow: one pass per grid offset)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    rows = run(args.image, args.family, args.method, Budget(steps=args.steps, steps_per_epoch=args.steps_per_epoch),
               args.seed, args.learning_rate, args.recalibrate_bn, args.blind_from)
    columns = [("stage", "stage"), ("epoch", "epoch"), ("val_loss", "masked val loss"), ("psnr", "PSNR"),
               ("psnr_fit", "PSNR, linear fit"), ("gain", "gain"), ("offset", "offset")]
    if args.recalibrate_bn:
        columns.append(("psnr_bn", f"PSNR, BN stats over {args.recalibrate_bn} batches"))
    if args.blind_from is not None:
        columns.append(("psnr_blind", "PSNR, blind-spot output"))
    print(markdown_table([{**row, "val_loss": f"{row['val_loss']:.4f}"} for row in rows], columns))


if __name__ == "__main__":
    main()
