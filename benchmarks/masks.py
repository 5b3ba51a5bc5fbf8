"""The mask survey: the automatic structN2V mask against the true noise correlation support.

Run from the repository root (no training, no torch; about a minute on one core for the full set):

    python -m benchmarks.masks [--images sparse dense cell ...] [--families white box5_h ...]
                               [--sigmas 0.05 0.1 0.2] [--seeds 0 1 2] [--memory]

For every image of the evaluation set (benchmarks/real_set.py), noise family, level and seed, the
mask is estimated from the raw noisy image, as the default pipeline does, and compared with
`true_support(noise)` (the lags where the analytic noise autocorrelation exceeds 1e-3, radius 12).
One markdown table per image class: the true support, the most common estimate, how many estimates
are exactly the true support, the mean IoU, the mean number of missed and extra lags, how many the
pipeline decorrelates instead of masking (core.whitening: the mask is then the centre alone; the table
shows the line it replaces), how many it trains on recorrupted pairs instead of blind spots
(core.recorruption: additive noise of a short reach) and the mean time per estimate; the summary adds how
close the recorruption covariance is to the noise's. `--memory` adds the peak memory and time
of one estimate on an 8192x8192 float32 image, measured in a fresh process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import Counter, defaultdict

import numpy as np

from napari_autostructn2v.core.config import MaskConfig
from napari_autostructn2v.core.mask import embed_mask, estimate_struct_mask
from napari_autostructn2v.core.whitening import detect_whitening

from .real_set import FAMILIES, IMAGE_CLASSES, Noise, clean_image, image_class, true_support

ALL_IMAGES = tuple(name for names in IMAGE_CLASSES.values() for name in names)
SHOT_NOISE = ("poisson", "pmt1", "pmt2", "banding")


def compare(estimated: np.ndarray, truth: np.ndarray) -> dict:
    """IoU of two centred masks, true lags missed and extra lags, in pixels."""
    radius = max(estimated.shape[0], truth.shape[0]) // 2
    a, b = embed_mask(np.asarray(estimated, bool), radius), embed_mask(np.asarray(truth, bool), radius)
    union = int((a | b).sum())
    return {"iou": float((a & b).sum() / union) if union else 1.0, "missed": int((b & ~a).sum()),
            "extra": int((a & ~b).sum())}


def describe(mask: np.ndarray) -> str:
    """'5 px 1x5': masked pixels and the rows x columns they span."""
    ys, xs = np.nonzero(mask)
    return f"{int(mask.sum())} px {np.ptp(ys) + 1}x{np.ptp(xs) + 1}"


def covariance_accuracy(covariance: np.ndarray, noise: Noise) -> dict:
    """The recorruption covariance against the noise's (its analytic correlation times sigma squared, additive
    families): the variance found over the true one, and the relative L2 error over lags within radius 12."""
    truth = noise.acf(12) * noise.sigma**2
    half, centre = min(covariance.shape[0] // 2, 12), covariance.shape[0] // 2
    found = embed_mask(covariance[centre - half : centre + half + 1, centre - half : centre + half + 1], 12)
    return {"variance_found": float(found[12, 12] / truth[12, 12]),
            "covariance_error": float(np.linalg.norm(found - truth) / np.linalg.norm(truth))}


def survey(images, families, sigmas, seeds, config=None, log=None) -> list[dict]:
    """One row per (image, family, sigma, seed): the estimate against the true support, and whether the
    pipeline would decorrelate the noise instead (the same rule as estimate_struct_mask with whiten on) or
    train on recorrupted pairs (`MaskConfig.recorrupt`, which applies where the noise is not decorrelated)."""
    config = MaskConfig(whiten=False) if config is None else config
    rows = []
    for image in images:
        for seed in seeds:
            clean = clean_image(image, seed)
            for family in families:
                for sigma in sigmas:
                    noise = Noise(family, sigma)
                    _, noisy = noise.apply(clean, seed=10_000 + seed)
                    truth = true_support(noise)
                    start = time.perf_counter()
                    estimate = estimate_struct_mask(noisy, config=config)
                    seconds = time.perf_counter() - start
                    row = {"image": image, "class": image_class(image), "family": family, "sigma": sigma,
                           "seed": seed, "seconds": seconds, "mask": describe(estimate.mask),
                           "truth": describe(truth), **compare(estimate.mask, truth),
                           "decorrelated": detect_whitening(estimate.acf, estimate.mask) is not None}
                    row["recorrupted"] = estimate.recorruption is not None and not row["decorrelated"]
                    row["textured"] = row["recorrupted"] and estimate.recorruption.textured
                    if row["recorrupted"] and family not in SHOT_NOISE:
                        row.update(covariance_accuracy(estimate.recorruption.covariance, noise))
                    row["exact"] = row["iou"] == 1.0
                    rows.append(row)
                    if log:
                        log(f"{image:>7} {family:>12} s={sigma:<5g} seed={seed} {row['mask']:>12} "
                            f"(true {row['truth']}) IoU {row['iou']:.2f}")
    return rows


def tables(rows: list[dict]) -> str:
    """One markdown table per image class, one line per noise family (all levels and seeds together)."""
    groups = defaultdict(list)
    for row in rows:
        groups[(row["class"], row["family"])].append(row)
    out = []
    for cls in IMAGE_CLASSES:
        families = [family for family in FAMILIES if (cls, family) in groups]
        if not families:
            continue
        images = sorted({row["image"] for row in rows if row["class"] == cls})
        out += [f"### {cls} ({', '.join(images)})", "",
                "| noise | true support | estimated (most common) | exact | mean IoU | missed | extra "
                "| decorrelated | recorrupted | ms |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for family in families:
            group = groups[(cls, family)]
            common, count = Counter(row["mask"] for row in group).most_common(1)[0]
            out.append(
                f"| {family} | {group[0]['truth']} | {common} ({count}/{len(group)}) | "
                f"{sum(row['exact'] for row in group)}/{len(group)} | {np.mean([r['iou'] for r in group]):.2f} | "
                f"{np.mean([r['missed'] for r in group]):.1f} | {np.mean([r['extra'] for r in group]):.1f} | "
                f"{sum(r['decorrelated'] for r in group)}/{len(group)} | "
                f"{sum(r['recorrupted'] for r in group)}/{len(group)} | "
                f"{1000 * np.mean([r['seconds'] for r in group]):.0f} |")
        out.append("")
    return "\n".join(out)


def summary(rows: list[dict]) -> str:
    """The headline figures: centre-only on uncorrelated noise, exact on the line families."""
    lines = []
    uncorrelated = [row for row in rows if row["family"] in ("white", "poisson")]
    if uncorrelated:
        centre = sum(row["mask"] == "1 px 1x1" for row in uncorrelated)
        lines.append(f"- white / poisson: centre only on {centre}/{len(uncorrelated)} "
                     f"({100 * centre / len(uncorrelated):.1f} %)")
    exact_families = ("box3_h", "box5_h", "box7_h", "box5_v", "diagonal", "antidiagonal", "banding")
    exact_rows = [row for row in rows if row["family"] in exact_families]
    if exact_rows:
        exact = sum(row["exact"] for row in exact_rows)
        lines.append(f"- box / diagonal / antidiagonal / banding: exact on {exact}/{len(exact_rows)}")
    rest = [row for row in rows if row["family"] not in exact_families + ("white", "poisson")]
    if rest:
        means = {key: np.mean([row[key] for row in rest]) for key in ("iou", "missed", "extra")}
        lines.append(f"- gauss / aniso / pmt: mean IoU {means['iou']:.2f}, missed {means['missed']:.1f}, "
                     f"extra {means['extra']:.1f}")
    pmt = [row for row in rows if row["family"].startswith("pmt")]
    others = [row for row in rows if not row["family"].startswith("pmt")]
    for name, group in (("pmt (first-order filtered)", pmt), ("all other families", others)):
        if group:
            count = sum(row["decorrelated"] for row in group)
            lines.append(f"- decorrelated instead of masked, {name}: {count}/{len(group)}")
    shot = [row for row in rows if row["family"] in SHOT_NOISE]
    additive = [row for row in rows if row["family"] not in SHOT_NOISE]
    for name, group in (("additive families", additive), ("shot-noise families (poisson, pmt, banding)", shot)):
        if group:
            count = sum(row["recorrupted"] for row in group)
            lines.append(f"- recorrupted pairs instead of blind spots, {name}: {count}/{len(group)}")
    recorrupted = [row for row in rows if row["recorrupted"]]
    if recorrupted:
        count = sum(row["textured"] for row in recorrupted)
        lines.append(f"- of those recorrupted, covariance measured through texture: {count}/{len(recorrupted)}")
    for cls in IMAGE_CLASSES:
        measured = [row for row in recorrupted if row["class"] == cls and "variance_found" in row]
        if measured:
            found = [row["variance_found"] for row in measured]
            errors = [row["covariance_error"] for row in measured]
            lines.append(f"- recorruption covariance against the noise's, {cls} ({len(measured)} cases): variance "
                         f"found / true median {np.median(found):.2f} ({min(found):.2f}-{max(found):.2f}), "
                         f"relative error median {np.median(errors):.2f} (max {max(errors):.2f})")
    return "\n".join(lines)


_MEMORY_PROBE = """
import resource, sys, time
import numpy as np
from napari_autostructn2v.core.mask import estimate_struct_mask
rng = np.random.default_rng(0)
image = np.empty((8192, 8192), np.float32)
for top in range(0, 8192, 1024):
    block = rng.standard_normal((1024, 8193), dtype=np.float32)
    image[top:top + 1024] = block[:, 1:] + block[:, :-1]
baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
estimate = estimate_struct_mask(image)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(f"{(peak - baseline) / 1024:.0f} {seconds:.1f} {int(estimate.mask.sum())}")
"""


def memory_line() -> str:
    """Peak memory above the baseline and time of one estimate on an 8192x8192 float32 image
    (horizontal [1, 1] noise), in a fresh process so earlier allocations do not hide the peak."""
    result = subprocess.run([sys.executable, "-c", _MEMORY_PROBE], capture_output=True, text=True, check=True)
    megabytes, seconds, pixels = result.stdout.split()
    return (f"8192x8192 float32: peak memory {megabytes} MB above the 256 MB image, {seconds} s, "
            f"mask of {pixels} px (expected 3)")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=list(ALL_IMAGES), choices=ALL_IMAGES)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--memory", action="store_true", help="also measure an 8192x8192 image (a few GB free)")
    parser.add_argument("--verbose", action="store_true", help="one line per case")
    args = parser.parse_args(argv)
    rows = survey(args.images, args.families, args.sigmas, args.seeds, log=print if args.verbose else None)
    print(tables(rows))
    print(summary(rows))
    if args.memory:
        print(f"- {memory_line()}")


if __name__ == "__main__":
    main()
