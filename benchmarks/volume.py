"""3D network against 2D (plane by plane) on a generated volume with in-plane structured noise.

    python -m benchmarks.volume                       # 32 x 256 x 256, 3 seeds, 60 steps each (over an hour on 1 thread)
    python -m benchmarks.volume --steps 20 --seeds 1 --shape 8 64 64 --patch-size 32   # a minute or two

Both networks run the default two-stage pipeline (ROI-selected N2V warm-up on a tenth of the
steps, then structN2V with the mask estimated from the image) for the same number of optimiser
steps, with the same UNet (16 base channels, depth 2) and the same number of pixels per batch:
the 2D network takes `--batch-2d` patches of P x P pixels, the 3D one `--batch-3d` patches of
`--patch-depth` x P x P (by default 16 patches of 64 x 64 against 2 of 8 x 64 x 64).
The volume is `core.sample.make_volume`: a signal continuous along Z, and noise of standard
deviation 0.1 correlated along rows (kernel of 3 pixels) in every plane, independent between
planes. PSNR is over the whole volume, SSIM the mean over planes, both against the clean volume
with data range 1. The table prints the mean and standard deviation over seeds and the gain of
3D over 2D per seed; the mask column shows the mask the run estimated (expected: the 5-pixel
horizontal line, no Z correlation). The figures in docs/shapes.md were taken with
`--steps 60 --batch-3d 1 --patch-depth 16` on a shared 2-core machine (load 7 to 9), torch on
1 thread, CPU only; the run's per-seed lines are printed to stderr as each run ends.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_autostructn2v import Config, denoise, train
from napari_autostructn2v.core.config import split_epochs
from napari_autostructn2v.core.sample import make_volume
from napari_autostructn2v.core.training import Done, MaskEstimated

from ._common import fmt, fmt_pm, limit_threads, markdown_table, mean_std, stopwatch, write_json

NETWORKS = ("2d", "3d")
TILE = {"2d": 256, "3d": 160}  # the 3D tile: 96 planes (32 mirrored on each side) x 160 x 160


def network_config(network: str, args: argparse.Namespace, seed: int) -> Config:
    """The default Config with the run's step budget, batch and patch for one network."""
    config = Config(seed=seed, device=args.device, network=network, patch_depth=args.patch_depth)
    steps_per_epoch = max(1, args.steps // 10)
    config.stage1.epochs, config.stage2.epochs = split_epochs(10)
    for stage in (config.stage1, config.stage2):
        stage.steps_per_epoch = steps_per_epoch
        stage.patch_size = args.patch_size
        stage.batch_size = args.batch_2d if network == "2d" else args.batch_3d
    return config.validate()


def run_once(network: str, noisy: np.ndarray, clean: np.ndarray, args: argparse.Namespace, seed: int) -> dict:
    """Train one network on the noisy volume and score its output against the clean one."""
    config = network_config(network, args, seed)
    estimates = []
    with stopwatch() as train_time:
        for event in train(noisy, config, axes="ZYX"):
            if isinstance(event, MaskEstimated):
                estimates.append(event.estimate)
            if isinstance(event, Done):
                model = event.model
    with stopwatch() as denoise_time:
        output = denoise(model, noisy, tile_size=TILE[network], axes="ZYX")
    assert output.shape == noisy.shape
    estimate = estimates[0]
    return {
        "network": network,
        "seed": seed,
        "psnr": peak_signal_noise_ratio(clean, output, data_range=1.0),
        "ssim": float(np.mean([structural_similarity(c, o, data_range=1.0) for c, o in zip(clean, output)])),
        "mask": estimate.as_text().replace("\n", "/"),
        "z_correlation": estimate.z_correlation,
        "train_s": train_time(),
        "denoise_s": denoise_time(),
        "steps": (config.stage1.epochs + config.stage2.epochs) * config.stage1.steps_per_epoch,
    }


def summarise(runs: list[dict], inputs: list[dict]) -> list[dict]:
    """One row per network (and the noisy input): mean ± std over seeds, and the gain of 3D per seed."""
    rows = [{"method": "noisy input", "psnr": fmt_pm(*mean_std([r["psnr"] for r in inputs])),
             "ssim": fmt_pm(*mean_std([r["ssim"] for r in inputs]), 3)}]
    for network in sorted({r["network"] for r in runs}):
        mine = [r for r in runs if r["network"] == network]
        rows.append({
            "method": f"{network} network",
            "psnr": fmt_pm(*mean_std([r["psnr"] for r in mine])),
            "ssim": fmt_pm(*mean_std([r["ssim"] for r in mine]), 3),
            "train_s": fmt(np.mean([r["train_s"] for r in mine]), 0),
            "denoise_s": fmt(np.mean([r["denoise_s"] for r in mine]), 0),
            "mask": " ".join(sorted({r["mask"] for r in mine})),
            "z_correlation": fmt(np.mean([r["z_correlation"] or 0.0 for r in mine]), 3),
        })
    by_seed = {(r["network"], r["seed"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})
    if not all(("2d", s) in by_seed and ("3d", s) in by_seed for s in seeds):
        return rows  # one network only: no difference to report
    gains_psnr = [by_seed["3d", s]["psnr"] - by_seed["2d", s]["psnr"] for s in seeds]
    gains_ssim = [by_seed["3d", s]["ssim"] - by_seed["2d", s]["ssim"] for s in seeds]
    rows.append({"method": "3d - 2d (per seed)", "psnr": fmt_pm(*mean_std(gains_psnr)),
                 "ssim": fmt_pm(*mean_std(gains_ssim), 3)})
    return rows


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.volume", description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 256, 256), metavar=("Z", "Y", "X"))
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (volumes and trainings), default 3")
    parser.add_argument("--networks", nargs="+", choices=NETWORKS, default=list(NETWORKS),
                        help="the networks to run (default both)")
    parser.add_argument("--steps", type=int, default=60, help="optimiser steps per run, both stages (default 60)")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--patch-depth", type=int, default=8)
    parser.add_argument("--batch-2d", type=int, default=16)
    parser.add_argument("--batch-3d", type=int, default=2)
    parser.add_argument("--sigma", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None, help="folder for volume.json (default benchmarks/results)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    runs, inputs = [], []
    for seed in range(args.seeds):
        clean, noisy = make_volume(tuple(args.shape), "horizontal", args.sigma, seed=seed)
        inputs.append({"psnr": peak_signal_noise_ratio(clean, noisy, data_range=1.0),
                       "ssim": float(np.mean([structural_similarity(c, n, data_range=1.0)
                                              for c, n in zip(clean, noisy)]))})
        for network in args.networks:
            runs.append(run_once(network, noisy, clean, args, seed))
            print(f"seed {seed} {network}: PSNR {runs[-1]['psnr']:.2f} dB, SSIM {runs[-1]['ssim']:.3f}, "
                  f"{runs[-1]['train_s']:.0f} s training", file=sys.stderr, flush=True)
    columns = [("method", "method"), ("psnr", "PSNR (dB)"), ("ssim", "SSIM"), ("train_s", "train (s)"),
               ("denoise_s", "denoise (s)"), ("mask", "estimated mask"), ("z_correlation", "Z corr.")]
    print(markdown_table(summarise(runs, inputs), columns))
    path = write_json("volume", {"args": vars(args), "runs": runs, "inputs": inputs}, args.output)
    print(f"\nruns written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
