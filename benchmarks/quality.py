"""Denoising quality next to the peers, on images with structured noise of a known kernel.

    python -m benchmarks.quality --quick          # a few minutes on 2 CPU cores
    python -m benchmarks.quality                  # the full grid (hours on a CPU)
    python -m benchmarks.quality --noise horizontal vertical --sigmas 0.1 --seeds 3 --steps 200
    python -m benchmarks.quality --suite real     # the real-image set with CAREamics (quality_real.py)

Every method trains the same UNet (Config defaults: 16 base channels, depth 2) for the same
total number of optimiser steps (both stages counted together), with the same batch and
patch size and the same seeds. Noise is `k * w` (w white, k from `core.sample.noise_kernel`)
scaled to the given sigma, added to a clean image in [0, 1]; PSNR and SSIM use data range 1.

Methods
- noisy: the input.
- N2V, N2V2: one stage, centre-only blind spot, random patches (no ROI).
- structN2V hand 5 / hand 13: one stage with the line mask a CAREamics user would set
  (horizontal for horizontal noise and row offsets, vertical for vertical noise; CAREamics
  has no diagonal mask, so none is run on diagonal noise).
- structN2V true mask: one stage with the oracle mask, the support of the noise
  autocorrelation (relative correlation > 1e-3, within ORACLE_RADIUS pixels).
- ours, true mask: our two-stage pipeline (default Config) with the oracle mask given, i.e.
  the best the automatic mask could do.
- ours: the default two-stage pipeline with the automatically estimated mask.
- supervised: the UNet trained on (noisy, clean) pairs, an upper reference.
- BM3D (true PSD): only when the optional `bm3d` package is importable; never a dependency.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np
import torch
from scipy.signal import correlate2d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_autostructn2v import Config, MaskConfig, StageConfig, denoise, estimate_struct_mask, preset_mask, train
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.config import split_epochs
from napari_autostructn2v.core.mask import crop_mask, embed_mask
from napari_autostructn2v.core.model import DenoisingModel, resolve_device
from napari_autostructn2v.core.sample import clean_image, noise_kernel, structured_noise
from napari_autostructn2v.core.training import Done, MaskEstimated
from napari_autostructn2v.core.unet import UNet

from ._common import fmt, fmt_pm, limit_threads, markdown_table, mean_std, stopwatch, write_json

ORACLE_RADIUS = 12
ORACLE_RELATIVE = 1e-3
CENTRE_ONLY = np.ones((1, 1), bool)

ALL_NOISE = ["white", "horizontal", "vertical", "diagonal", "horizontal_gauss:1", "horizontal_gauss:2",
             "horizontal_gauss:3", "vertical_gauss:1", "vertical_gauss:2", "vertical_gauss:3", "row_offsets"]
ALL_METHODS = ["noisy", "N2V", "N2V2", "structN2V hand 5", "structN2V hand 13", "structN2V true mask",
               "ours, true mask", "ours", "supervised", "BM3D (true PSD)"]
ABLATIONS = {
    "ours, mask from stage-1 residual": lambda c: dataclasses.replace(
        c, mask=dataclasses.replace(c.mask, source="stage1_residual")),
    "ours, stage 2 from scratch": lambda c: dataclasses.replace(c, stage2_from_stage1=False),
    "ours, even stage split": lambda c: dataclasses.replace(
        c, stage1=dataclasses.replace(c.stage1, epochs=(c.stage1.epochs + c.stage2.epochs) // 2),
        stage2=dataclasses.replace(c.stage2, epochs=(c.stage1.epochs + c.stage2.epochs + 1) // 2)),
    "ours, mask radius 6": lambda c: dataclasses.replace(c, mask=dataclasses.replace(c.mask, max_radius=6)),
    "ours, stage 1 skipped": lambda c: dataclasses.replace(
        c, stage1=dataclasses.replace(c.stage1, epochs=0),
        stage2=dataclasses.replace(c.stage2, epochs=c.stage1.epochs + c.stage2.epochs)),
    "ours, no ROI in stage 1": lambda c: dataclasses.replace(c, stage1=dataclasses.replace(c.stage1, use_roi=False)),
    "ours, mask 0.5 %": lambda c: both_stages(c, mask_percent=0.5),
    "ours, mask 3 %": lambda c: both_stages(c, mask_percent=3.0),
    "ours, patch 32": lambda c: both_stages(c, patch_size=32),
    "ours, patch 96": lambda c: both_stages(c, patch_size=96),
    "ours, float32": lambda c: dataclasses.replace(c, mixed_precision=False),
    "ours, mean not kept": lambda c: dataclasses.replace(c, keep_mean=False),
    "ours, contrast not kept": lambda c: dataclasses.replace(c, keep_contrast=False),
    "ours, no batch norm": lambda c: dataclasses.replace(c, batch_norm=False),
    "ours, no whitening": lambda c: dataclasses.replace(c, mask=dataclasses.replace(c.mask, whiten=False)),
    "ours, blind spots": lambda c: dataclasses.replace(c, mask=dataclasses.replace(c.mask, recorrupt=False)),
}


# ----------------------------------------------------------------------------- noise and its ground truth

@dataclass(frozen=True)
class Noise:
    kind: str
    length: float = 2.0

    @classmethod
    def parse(cls, text: str) -> Noise:
        kind, _, length = text.partition(":")
        return cls(kind, float(length) if length else 2.0)

    @property
    def label(self) -> str:
        return f"{self.kind} l={self.length:g}" if self.kind.endswith("_gauss") else self.kind

    @property
    def correlated(self) -> bool:
        return self.kind != "white"

    @property
    def hand_direction(self) -> str | None:
        """The line a CAREamics user would draw for this noise (None: CAREamics offers no fitting mask)."""
        if self.kind.startswith("vertical"):
            return "vertical"
        if self.kind == "diagonal":
            return None
        return "horizontal"


def true_acf(noise: Noise, radius: int = ORACLE_RADIUS) -> np.ndarray:
    """The normalised noise autocorrelation on lags within +-radius (centre = 1)."""
    size = 2 * radius + 1
    acf = np.zeros((size, size))
    if noise.kind == "row_offsets":
        acf[radius, :] = 0.5  # half the variance is a constant per row
        acf[radius, radius] = 1.0
        return acf
    kernel = noise_kernel(noise.kind, noise.length)
    full = correlate2d(kernel, kernel, mode="full")
    full /= full[kernel.shape[0] - 1, kernel.shape[1] - 1]
    cy, cx = kernel.shape[0] - 1, kernel.shape[1] - 1
    for dy in range(-min(radius, cy), min(radius, cy) + 1):
        for dx in range(-min(radius, cx), min(radius, cx) + 1):
            acf[radius + dy, radius + dx] = full[cy + dy, cx + dx]
    return acf


def true_support(noise: Noise, radius: int = ORACLE_RADIUS, relative: float = ORACLE_RELATIVE) -> np.ndarray:
    """The oracle structN2V mask: lags whose true correlation exceeds `relative`, within `radius`."""
    support = true_acf(noise, radius) > relative
    support[radius, radius] = True
    return crop_mask(support)


def mask_metrics(estimated: np.ndarray, truth: np.ndarray) -> dict:
    """IoU of two centred masks, true lags missed (under) and extra lags (over), in pixels."""
    radius = max(estimated.shape[0], truth.shape[0]) // 2
    a, b = embed_mask(np.asarray(estimated, bool), radius), embed_mask(np.asarray(truth, bool), radius)
    union = int((a | b).sum())
    return {"iou": (a & b).sum() / union if union else 1.0, "under": int((b & ~a).sum()), "over": int((a & ~b).sum())}


def describe_mask(mask: np.ndarray) -> str:
    """'5 px in 1x5' style: masked pixels and the rows x columns they span."""
    ys, xs = np.nonzero(mask)
    return f"{int(mask.sum())} px in {np.ptp(ys) + 1}x{np.ptp(xs) + 1}"


def noise_psd(noise: Noise, sigma: float, shape: tuple[int, int]) -> np.ndarray:
    """The noise power spectrum in BM3D's convention (white noise: sigma**2 * H * W everywhere)."""
    height, width = shape
    if noise.kind == "row_offsets":
        psd = np.full(shape, 0.5 * sigma**2 * height * width)
        psd[:, 0] += 0.5 * sigma**2 * height * width**2
        return psd
    kernel = noise_kernel(noise.kind, noise.length)
    return sigma**2 * np.abs(np.fft.fft2(kernel, s=shape)) ** 2 * height * width


# ----------------------------------------------------------------------------- data

def load_clean(image: str, shape: tuple[int, int], seed: int) -> np.ndarray:
    """A clean float32 image in [0, 1]: the package's procedural sample or a bundled scikit-image crop."""
    if image == "sample":
        return clean_image(shape, seed)
    from skimage import data  # only images that ship with scikit-image (no download)

    bundled = {"cell": data.cell, "camera": data.camera, "moon": data.moon, "coins": data.coins}
    if image not in bundled:
        raise SystemExit(f"unknown image {image!r}; choose sample or one of {sorted(bundled)}")
    full = bundled[image]().astype(np.float32)
    if full.shape[0] < shape[0] or full.shape[1] < shape[1]:
        raise SystemExit(f"{image} is {full.shape}, smaller than {shape}")
    rng = np.random.default_rng(seed)
    y = int(rng.integers(0, full.shape[0] - shape[0] + 1))
    x = int(rng.integers(0, full.shape[1] - shape[1] + 1))
    crop = full[y: y + shape[0], x: x + shape[1]]
    return ((crop - crop.min()) / max(float(np.ptp(crop)), 1e-12)).astype(np.float32)


def make_case(noise: Noise, sigma: float, seed: int, shape: tuple[int, int], image: str = "sample"):
    clean = load_clean(image, shape, seed)
    noisy = clean + structured_noise(shape, noise.kind, sigma, noise.length, seed=10_000 + seed)
    return clean, noisy.astype(np.float32)


# ----------------------------------------------------------------------------- methods

@dataclass(frozen=True)
class Budget:
    """Total optimiser steps (both stages together), split 1:9 between the stages of ours as in the defaults."""

    steps: int = 200
    steps_per_epoch: int = 20
    batch_size: int = 16
    patch_size: int = 64

    def __post_init__(self):
        if self.steps % (2 * self.steps_per_epoch):
            raise ValueError(f"steps ({self.steps}) must be a multiple of 2 * steps_per_epoch ({2 * self.steps_per_epoch})")

    def stage(self, epochs: int, **changes) -> StageConfig:
        return StageConfig(epochs=epochs, steps_per_epoch=self.steps_per_epoch, batch_size=self.batch_size,
                           patch_size=self.patch_size, **changes)


def ours_config(budget: Budget, seed: int) -> Config:
    """The default Config with only the budget (epochs, steps, batch, patch) changed; the epochs are
    split between the stages in the defaults' proportion (`split_epochs`)."""
    stage1_epochs, stage2_epochs = split_epochs(budget.steps // budget.steps_per_epoch)
    defaults = Config()
    stage1 = dataclasses.replace(defaults.stage1, epochs=stage1_epochs, steps_per_epoch=budget.steps_per_epoch,
                                 batch_size=budget.batch_size, patch_size=budget.patch_size)
    stage2 = dataclasses.replace(defaults.stage2, epochs=stage2_epochs, steps_per_epoch=budget.steps_per_epoch,
                                 batch_size=budget.batch_size, patch_size=budget.patch_size)
    return dataclasses.replace(defaults, stage1=stage1, stage2=stage2, seed=seed)


def one_stage_config(budget: Budget, seed: int, *, struct: bool, n2v2: bool = False) -> Config:
    """All the budget in one stage on random patches: stage 1 (N2V) or stage 2 (structN2V from scratch)."""
    epochs = budget.steps // budget.steps_per_epoch
    active = budget.stage(epochs, use_roi=False, n2v2=n2v2)
    idle = budget.stage(0, use_roi=False)
    if struct:
        return Config(stage1=idle, stage2=active, seed=seed)
    return Config(stage1=active, stage2=idle, seed=seed)


def both_stages(config: Config, **changes) -> Config:
    return dataclasses.replace(config, stage1=dataclasses.replace(config.stage1, **changes),
                               stage2=dataclasses.replace(config.stage2, **changes))


def train_model(noisy: np.ndarray, config: Config, struct_mask: np.ndarray | None) -> tuple[DenoisingModel, np.ndarray, str]:
    """Train with the core; return the model, the stage-2 mask and the estimate's reason."""
    mask, reason = struct_mask, "given"
    model = None
    for event in train(noisy, config, struct_mask=struct_mask):
        if isinstance(event, MaskEstimated):
            mask, reason = event.mask, event.estimate.reason
        elif isinstance(event, Done):
            model = event.model
    return model, mask, reason


def run_training(noisy: np.ndarray, config: Config, struct_mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Train with the core, denoise; return the output, the stage-2 mask and the estimate's reason."""
    model, mask, reason = train_model(noisy, config, struct_mask)
    return denoise(model, noisy), mask, reason


def train_supervised(noisy: np.ndarray, clean: np.ndarray, budget: Budget, seed: int,
                     base_channels: int = 16, depth: int = 2, learning_rate: float = 1e-3) -> DenoisingModel:
    """The same UNet trained on (noisy, clean) patch pairs: random corners and 180 degree rotations, like
    the core's sampler; Adam with cosine decay like the core's stages."""
    device = resolve_device("auto")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    normalisation = Normalisation.fit([noisy])
    net = UNet(base_channels, depth).to(device).train()
    optimiser = torch.optim.Adam(net.parameters(), lr=learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, budget.steps, eta_min=learning_rate * 0.05)
    size = budget.patch_size
    height, width = noisy.shape
    for _ in range(budget.steps):
        ys = rng.integers(0, height - size + 1, budget.batch_size)
        xs = rng.integers(0, width - size + 1, budget.batch_size)
        flips = rng.random(budget.batch_size) < 0.5
        inputs = np.empty((budget.batch_size, 1, size, size), np.float32)
        targets = np.empty_like(inputs)
        for i, (y, x, flip) in enumerate(zip(ys, xs, flips)):
            step = -1 if flip else 1
            inputs[i, 0] = normalisation.forward(noisy[y: y + size, x: x + size][::step, ::step])
            targets[i, 0] = normalisation.forward(clean[y: y + size, x: x + size][::step, ::step])
        inputs_t, targets_t = torch.from_numpy(inputs).to(device), torch.from_numpy(targets).to(device)
        loss = torch.mean((net(inputs_t) - targets_t) ** 2)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
    net.eval()
    return DenoisingModel(net, Config(base_channels=base_channels, depth=depth), normalisation)


def bm3d_available() -> bool:
    try:
        import bm3d  # noqa: F401  (optional, non-commercial licence: benchmark only)
    except ImportError:
        return False
    return True


def run_bm3d(noisy: np.ndarray, psd: np.ndarray) -> np.ndarray | None:
    """BM3D with the given noise PSD; None (with a note on stderr) when the optional package fails.

    bm3d 4.0.3 (through bm4d) still calls `numpy.trapz`, which numpy 2.4 removed; the alias to
    `numpy.trapezoid` is set for the duration of the call only.
    """
    import bm3d

    patched = not hasattr(np, "trapz") and hasattr(np, "trapezoid")
    if patched:
        np.trapz = np.trapezoid
    try:
        return np.asarray(bm3d.bm3d(noisy.astype(np.float64), psd), np.float32)
    except Exception as err:  # an optional reference must never stop the benchmark
        print(f"note: BM3D failed ({type(err).__name__}: {err}); skipped", file=sys.stderr)
        return None
    finally:
        if patched:
            del np.trapz


def run_method(method: str, clean: np.ndarray, noisy: np.ndarray, noise: Noise, sigma: float, seed: int,
               budget: Budget) -> dict | None:
    """One method on one noisy image: the output's PSNR / SSIM, the mask used and the wall time.

    None when the method does not apply (no hand mask for diagonal noise, BM3D not installed).
    """
    oracle = true_support(noise)
    mask, reason = None, ""
    with stopwatch() as elapsed:
        if method == "noisy":
            output = noisy
        elif method in ("N2V", "N2V2"):
            config = one_stage_config(budget, seed, struct=False, n2v2=method == "N2V2")
            output, _, _ = run_training(noisy, config, CENTRE_ONLY)
            mask = CENTRE_ONLY
        elif method.startswith("structN2V hand"):
            if noise.hand_direction is None:
                return None
            mask = preset_mask(noise.hand_direction, int(method.rsplit(" ", 1)[1]))
            output, _, _ = run_training(noisy, one_stage_config(budget, seed, struct=True), mask)
        elif method == "structN2V true mask":
            output, mask, _ = run_training(noisy, one_stage_config(budget, seed, struct=True), oracle)
        elif method == "ours, true mask":
            output, mask, _ = run_training(noisy, ours_config(budget, seed), oracle)
        elif method == "ours":
            output, mask, reason = run_training(noisy, ours_config(budget, seed), None)
        elif method in ABLATIONS:
            output, mask, reason = run_training(noisy, ABLATIONS[method](ours_config(budget, seed)), None)
        elif method == "supervised":
            output = denoise(train_supervised(noisy, clean, budget, seed), noisy)
        elif method == "BM3D (true PSD)":
            if not bm3d_available():
                return None
            output = run_bm3d(noisy, noise_psd(noise, sigma, noisy.shape))
            if output is None:
                return None
        else:
            raise ValueError(f"unknown method {method!r}; choose from {ALL_METHODS + list(ABLATIONS)}")
    seconds = elapsed()
    row = {
        "noise": noise.label, "kind": noise.kind, "length": noise.length, "sigma": sigma, "seed": seed,
        "method": method,
        "psnr": float(peak_signal_noise_ratio(clean, output, data_range=1.0)),
        "ssim": float(structural_similarity(clean, output, data_range=1.0)),
        "seconds": seconds if method != "noisy" else 0.0,
    }
    if mask is not None:
        row.update(mask=np.asarray(mask, bool).astype(int).tolist(), mask_text=describe_mask(mask),
                   **mask_metrics(mask, oracle))
    if reason:
        row["reason"] = reason
    return row


def run_case(noise: Noise, sigma: float, seed: int, methods: list[str], budget: Budget,
             shape: tuple[int, int] = (256, 256), image: str = "sample", log=None) -> list[dict]:
    """All `methods` on one (noise, sigma, seed) image. A run that would repeat another exactly (same
    pipeline, same seed, same mask) is not trained twice: its row is copied and marked `reused`."""
    clean, noisy = make_case(noise, sigma, seed, shape, image)
    oracle = true_support(noise)
    rows: dict[str, dict] = {}
    order = sorted(methods, key=lambda m: ALL_METHODS.index(m) if m in ALL_METHODS else len(ALL_METHODS))
    # "ours" first, so that "ours, true mask" can reuse it when the estimated mask is the true one
    if "ours" in order and "ours, true mask" in order:
        order.remove("ours")
        order.insert(order.index("ours, true mask"), "ours")
    for method in order:
        reuse = None
        if method == "structN2V true mask" and oracle.sum() == 1 and "N2V" in rows:
            reuse = "N2V"  # centre-only oracle: one-stage structN2V is plain N2V
        for hand in ("structN2V hand 5", "structN2V hand 13"):
            if method == "structN2V true mask" and hand in rows and _same_mask(rows[hand].get("mask"), oracle):
                reuse = hand  # the hand mask is the true one: the same run
        if method == "ours, true mask" and "ours" in rows and _same_mask(rows["ours"].get("mask"), oracle):
            reuse = "ours"  # the estimate was exactly the true mask: the same run
        if reuse:
            row = {**rows[reuse], "method": method, "reused": reuse}
        else:
            row = run_method(method, clean, noisy, noise, sigma, seed, budget)
        if row is None:
            continue
        rows[method] = row
        if log:
            extra = f" mask {row['mask_text']} IoU {row['iou']:.2f}" if "mask_text" in row else ""
            note = f" (= {reuse})" if reuse else ""
            log(f"{noise.label:>20} s={sigma:g} seed={seed} {method:<34} PSNR {row['psnr']:6.2f} "
                f"SSIM {row['ssim']:.3f} {row['seconds']:6.1f} s{extra}{note}")
    return [rows[m] for m in methods if m in rows]


# ----------------------------------------------------------------------------- the cheap mask survey

def mask_survey(noises: list[Noise], sigmas: list[float], seeds: list[int], shape=(256, 256), image="sample",
                config: MaskConfig | None = None) -> list[dict]:
    """The automatic mask (estimated from the raw noisy image, as the default pipeline does) against the
    true correlation support, for every noise, sigma and seed; no training needed."""
    rows = []
    for noise in noises:
        oracle = true_support(noise)
        for sigma in sigmas:
            for seed in seeds:
                _, noisy = make_case(noise, sigma, seed, shape, image)
                with stopwatch() as elapsed:
                    estimate = estimate_struct_mask(noisy, config=config)
                rows.append({"noise": noise.label, "sigma": sigma, "seed": seed, "seconds": elapsed(),
                             "mask_text": describe_mask(estimate.mask), "true_text": describe_mask(oracle),
                             "exact": bool(_same_mask(estimate.mask, oracle)), **mask_metrics(estimate.mask, oracle)})
    return rows


def _same_mask(a, b) -> bool:
    if a is None or b is None:
        return False
    return mask_metrics(np.asarray(a, bool), np.asarray(b, bool))["iou"] == 1.0


# ----------------------------------------------------------------------------- summaries

def aggregate(rows: list[dict]) -> dict[tuple[str, float], dict[str, dict]]:
    """{(noise, sigma): {method: {psnr, psnr_std, ssim, ssim_std, seconds, iou, under, over, n}}}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["noise"], row["sigma"], row["method"])].append(row)
    summary: dict[tuple[str, float], dict[str, dict]] = defaultdict(dict)
    for (noise, sigma, method), group in groups.items():
        entry = {"n": len(group)}
        for key in ("psnr", "ssim", "seconds", "iou", "under", "over"):
            values = [r[key] for r in group if key in r]
            if values:
                entry[key], entry[f"{key}_std"] = mean_std(values)
        masks = Counter(r["mask_text"] for r in group if "mask_text" in r)
        if masks:
            entry["mask_text"] = ", ".join(f"{text} ({count}x)" if len(masks) > 1 else text
                                           for text, count in masks.most_common())
        summary[(noise, sigma)][method] = entry
    return summary


def targets(summary) -> list[dict]:
    """The issue's targets per noise: ours within 0.5 dB of the best true-mask run and at least 3 dB
    above N2V on correlated noise; within 0.2 dB of N2V (or better) on white noise."""
    results = []
    for (noise, sigma), methods in summary.items():
        if "ours" not in methods:
            continue
        ours = methods["ours"]["psnr"]
        row = {"noise": noise, "sigma": sigma, "ours": ours}
        oracle_runs = [methods[m]["psnr"] for m in ("structN2V true mask", "ours, true mask") if m in methods]
        n2v = methods.get("N2V", {}).get("psnr")
        if noise == "white":
            row["check"] = "within 0.2 dB of N2V"
            row["gap"] = None if n2v is None else ours - n2v
            row["holds"] = None if n2v is None else ours >= n2v - 0.2
        else:
            row["vs_oracle"] = ours - max(oracle_runs) if oracle_runs else None
            row["vs_n2v"] = None if n2v is None else ours - n2v
            holds_oracle = row["vs_oracle"] is None or row["vs_oracle"] >= -0.5
            holds_n2v = row["vs_n2v"] is None or row["vs_n2v"] >= 3.0
            row["check"] = ">= oracle - 0.5 dB and >= N2V + 3 dB"
            row["holds"] = holds_oracle and holds_n2v
            row["holds_oracle"], row["holds_n2v"] = holds_oracle, holds_n2v
        results.append(row)
    return results


def tables(rows: list[dict], survey: list[dict] | None = None) -> dict[str, str]:
    """The markdown tables of a run: PSNR, SSIM, masks, times, targets and (optional) mask survey."""
    summary = aggregate(rows)
    methods = []
    for row in rows:
        if row["method"] not in methods:
            methods.append(row["method"])
    keys = sorted(summary, key=lambda k: (ALL_NOISE.index(k[0].replace(" l=", ":")) if k[0].replace(" l=", ":")
                                          in ALL_NOISE else 99, k[0], k[1]))
    out = {}
    for metric, digits in (("psnr", 2), ("ssim", 3)):
        table_rows = []
        for key in keys:
            cells = {"noise": key[0], "sigma": fmt(key[1], 2)}
            for method in methods:
                entry = summary[key].get(method)
                cells[method] = "n/a" if entry is None else fmt_pm(entry[metric], entry[f"{metric}_std"], digits)
            table_rows.append(cells)
        out[metric] = markdown_table(table_rows, [("noise", "noise"), ("sigma", "sigma")] + [(m, m) for m in methods])
    mask_methods = [m for m in methods if any("mask_text" in e for k in keys for mm, e in summary[k].items() if mm == m)
                    and (m == "ours" or m in ABLATIONS)]
    mask_rows = []
    for key in keys:
        for method in mask_methods:
            entry = summary[key].get(method)
            if entry is None:
                continue
            mask_rows.append({"noise": key[0], "sigma": fmt(key[1], 2), "method": method,
                              "true": describe_mask(true_support(Noise.parse(key[0].replace(" l=", ":")))),
                              "estimated": entry.get("mask_text", "-"), "iou": fmt_pm(entry["iou"], entry["iou_std"]),
                              "under": fmt_pm(entry["under"], entry["under_std"], 1),
                              "over": fmt_pm(entry["over"], entry["over_std"], 1)})
    out["masks"] = markdown_table(mask_rows, [("noise", "noise"), ("sigma", "sigma"), ("method", "method"),
                                              ("true", "true support"), ("estimated", "estimated mask"),
                                              ("iou", "IoU"), ("under", "missed lags"), ("over", "extra lags")])
    time_rows = []
    for method in [m for m in methods if m != "noisy"]:
        values = [r["seconds"] for r in rows if r["method"] == method and not r.get("reused")]
        mean, std = mean_std(values)
        time_rows.append({"method": method, "seconds": fmt_pm(mean, std, 1), "runs": len(values),
                          "reused": sum(1 for r in rows if r["method"] == method and r.get("reused"))})
    out["times"] = markdown_table(time_rows, [("method", "method"), ("seconds", "wall time per run (s)"),
                                              ("runs", "runs"), ("reused", "identical runs reused")])
    target_rows = []
    for t in targets(summary):
        target_rows.append({"noise": t["noise"], "sigma": fmt(t["sigma"], 2), "ours": fmt(t["ours"]),
                            "vs_oracle": fmt(t.get("vs_oracle")), "vs_n2v": fmt(t.get("vs_n2v", t.get("gap"))),
                            "check": t["check"], "holds": "yes" if t["holds"] else ("-" if t["holds"] is None else "no")})
    out["targets"] = markdown_table(target_rows, [("noise", "noise"), ("sigma", "sigma"), ("ours", "ours (dB)"),
                                                  ("vs_oracle", "ours - best true mask (dB)"),
                                                  ("vs_n2v", "ours - N2V (dB)"), ("check", "target"),
                                                  ("holds", "holds")])
    if survey:
        groups: dict[tuple, list[dict]] = defaultdict(list)
        for row in survey:
            groups[(row["noise"], row["sigma"])].append(row)
        survey_rows = []
        for (noise, sigma), group in groups.items():
            masks = Counter(r["mask_text"] for r in group)
            survey_rows.append({
                "noise": noise, "sigma": fmt(sigma, 2), "true": group[0]["true_text"],
                "estimated": ", ".join(f"{t} ({c}x)" if len(masks) > 1 else t for t, c in masks.most_common()),
                "exact": f"{sum(r['exact'] for r in group)}/{len(group)}",
                "iou": fmt_pm(*mean_std([r["iou"] for r in group])),
                "under": fmt_pm(*mean_std([r["under"] for r in group]), 1),
                "over": fmt_pm(*mean_std([r["over"] for r in group]), 1),
                "ms": fmt(1000 * float(np.mean([r["seconds"] for r in group])), 0),
            })
        out["mask_survey"] = markdown_table(survey_rows, [
            ("noise", "noise"), ("sigma", "sigma"), ("true", "true support"), ("estimated", "estimated mask"),
            ("exact", "exact"), ("iou", "IoU"), ("under", "missed lags"), ("over", "extra lags"), ("ms", "ms")])
    return out


TITLES = {
    "psnr": "PSNR (dB), mean ± std over seeds",
    "ssim": "SSIM, mean ± std over seeds",
    "masks": "Stage-2 mask of ours against the true correlation support",
    "times": "Wall time per run (training + denoising; shared 2-core CPU, noisy)",
    "targets": "Targets",
    "mask_survey": "Mask estimation alone (raw noisy image, no training), all seeds",
}


def render(out: dict[str, str]) -> str:
    return "\n\n".join(f"### {TITLES.get(name, name)}\n\n{table}" for name, table in out.items())


# ----------------------------------------------------------------------------- command line

SUITES = ("procedural", "real")


def _suite_parser() -> argparse.ArgumentParser:
    """Reads only --suite, so that each suite parses its own options."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--suite", choices=SUITES, default="procedural")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", choices=SUITES, default="procedural",
                        help="procedural: this suite (default); real: the real-image set with CAREamics "
                             "(python -m benchmarks.quality --suite real --help for its options)")
    parser.add_argument("--quick", action="store_true",
                        help="horizontal and white noise at sigma 0.1, one seed, 192x192, 60 steps (a few minutes)")
    parser.add_argument("--noise", nargs="+", default=None, help=f"noise kinds, KIND or KIND:LENGTH; default all: {ALL_NOISE}")
    parser.add_argument("--sigmas", nargs="+", type=float, default=None, help="noise sigmas (default 0.05 0.1 0.2)")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument("--steps", type=int, default=None, help="total optimiser steps per method (default 200)")
    parser.add_argument("--steps-per-epoch", type=int, default=None, help="default 20 (quick: 10)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=None, help="image side in pixels (default 256)")
    parser.add_argument("--image", default="sample", help="sample (procedural) or a bundled skimage image: cell, camera")
    parser.add_argument("--methods", nargs="+", default=None, help=f"default all: {ALL_METHODS}".replace("%", "%%"))
    parser.add_argument("--ablations", action="store_true",
                        help=f"also run variants of ours' defaults: {list(ABLATIONS)}".replace("%", "%%"))
    parser.add_argument("--survey-only", action="store_true", help="only the mask estimation survey (no training)")
    parser.add_argument("--no-survey", action="store_true", help="skip the (cheap) mask estimation survey")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared 2-core CPU, 2 threads ran 4-10x slower)")
    parser.add_argument("--out", default=None, help="folder for quality.json (default benchmarks/results)")
    parser.add_argument("--name", default="quality", help="JSON file name without .json")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only print the tables of these result files together (no training)")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    suite, rest = _suite_parser().parse_known_args(argv)
    if suite.suite == "real":
        from .quality_real import main as real_main

        return real_main(rest)
    args = parse_args(argv)
    limit_threads(args.threads)
    quick = args.quick
    noises = [Noise.parse(n) for n in (args.noise or (["horizontal", "white"] if quick else ALL_NOISE))]
    sigmas = args.sigmas or ([0.1] if quick else [0.05, 0.1, 0.2])
    seeds = list(range(args.seeds or (1 if quick else 3)))
    size = args.size or (192 if quick else 256)
    budget = Budget(steps=args.steps or (60 if quick else 200),
                    steps_per_epoch=args.steps_per_epoch or (10 if quick else 20),
                    batch_size=args.batch_size, patch_size=args.patch_size)
    methods = list(args.methods or ALL_METHODS)
    if args.ablations:
        methods += [m for m in ABLATIONS if m not in methods]
    if not bm3d_available() and "BM3D (true PSD)" in methods:
        print("note: bm3d is not installed; BM3D is skipped (pip install bm3d to add it)", file=sys.stderr)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    if args.merge:
        return merge(args.merge, args)
    if args.survey_only:
        with stopwatch() as total:
            survey = mask_survey(noises, sigmas, seeds, (size, size), args.image)
        out = {"mask_survey": tables([], survey)["mask_survey"]}
        print(f"Mask survey: image {args.image} {size}x{size}, seeds {len(seeds)}, wall time {total():.0f} s\n\n"
              + render(out))
        payload = {"args": vars(args), "wall_seconds": total(), "rows": [], "survey": survey, "tables": out}
        print(f"\nwritten {write_json(args.name, payload, args.out)}", file=sys.stderr)
        return payload
    rows = []
    with stopwatch() as total:
        for noise in noises:
            for sigma in sigmas:
                for seed in seeds:
                    rows += run_case(noise, sigma, seed, methods, budget, (size, size), args.image, log)
                    write_json(args.name, {"args": vars(args), "partial": True, "rows": rows}, args.out)
        survey = None if args.no_survey else mask_survey(noises, sigmas, seeds, (size, size), args.image)
    out = tables(rows, survey)
    text = render(out)
    header = (f"Quality: image {args.image} {size}x{size}, budget {budget.steps} steps x batch {budget.batch_size} x "
              f"patch {budget.patch_size} per method, seeds {len(seeds)}, total wall time {total():.0f} s")
    print(header + "\n\n" + text)
    payload = {"args": vars(args), "budget": dataclasses.asdict(budget), "wall_seconds": total(),
               "bm3d": bm3d_available(), "rows": rows, "survey": survey or [], "tables": out,
               "targets": targets(aggregate(rows))}
    path = write_json(args.name, payload, args.out)
    print(f"\nwritten {path}", file=sys.stderr)
    return payload


def merge(paths: list[str], args: argparse.Namespace) -> dict:
    """Tables from the rows of several result files (e.g. runs split over noise types)."""
    import json
    from pathlib import Path

    rows, survey, wall = [], [], 0.0
    for path in paths:
        data = json.loads(Path(path).read_text())
        rows += data["rows"]
        survey += data.get("survey", [])
        wall += data.get("wall_seconds", 0.0)
    out = tables(rows, survey or None)
    print(f"Quality: merged {len(paths)} files, {len(rows)} rows, summed wall time {wall:.0f} s\n\n" + render(out))
    payload = {"args": vars(args), "merged": paths, "wall_seconds": wall, "rows": rows, "survey": survey,
               "tables": out, "targets": targets(aggregate(rows))}
    print(f"\nwritten {write_json(args.name, payload, args.out)}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
