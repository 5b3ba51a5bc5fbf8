"""Denoising quality on the real-image evaluation set (benchmarks/real_set.py), CAREamics side by side.

    python -m benchmarks.quality --suite real                       # defaults below
    python -m benchmarks.quality --suite real --images sparse --families box5_h --steps 40
    python -m benchmarks.quality --suite real --careamics-python /path/to/venv/bin/python

Every trained method gets the same budget (Budget: optimiser steps, batch, patch; both stages of
ours counted together) on the same noisy image and seed. Ours always runs the package's current
`Config()` defaults (only the budget changed, as in the procedural suite), so a recipe change is
measured by rerunning the same command.

Methods
- noisy: the input.
- N2V: ours, one stage, centre-only blind spot, random patches.
- structN2V true mask: ours, one stage, the true support of the noise autocorrelation as the mask.
- ours: the default two-stage pipeline with the estimated mask.
- CAREamics N2V, CAREamics structN2V 5, CAREamics structN2V best: CAREamics 0.3.5 in its own
  environment (benchmarks/peers), N2V and structN2V with the line preset a user would pick
  (horizontal for horizontal noise, PMT filtering and row banding; vertical for vertical noise;
  none exists for diagonal or 2D anisotropic noise) at span 5 and at the smallest span covering
  the true support along that line (CAREamics allows 3..15).

Metrics (reference and output in [0, 1] units, data range 1): PSNR; PSNR after the least-squares
fit a * output + b of the output to the reference; SSIM; intensity bias, the mean of output -
reference over the brightest 5 % of reference pixels (ties included); wall time.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from napari_autostructn2v import Config, denoise
from napari_autostructn2v.core.mask import crop_mask
from napari_autostructn2v.core.model import resolve_device

from . import real_set
from ._common import fmt, fmt_pm, limit_threads, markdown_table, mean_std, stopwatch, write_json
from .peers import careamics_client
from .quality import (ABLATIONS, CENTRE_ONLY, Budget, describe_mask, mask_metrics, one_stage_config, ours_config,
                      run_training, train_model, train_supervised)

DEFAULT_IMAGES = ["sparse", "dense", "cell", "hubble", "moon", "coins"]
DEFAULT_FAMILIES = ["white", "poisson", "box5_h", "gauss2_h", "box5_v", "diagonal", "pmt2", "banding"]
OURS_METHODS = ["noisy", "N2V", "structN2V true mask", "ours", "ours, direct inference"]
CAREAMICS_METHODS = ["CAREamics N2V", "CAREamics structN2V 5", "CAREamics structN2V best"]
ALL_METHODS = OURS_METHODS + CAREAMICS_METHODS
# quality's ablations of ours, by name (float32: Config.mixed_precision off; Config.keep_mean off; Config.keep_contrast
# off; Config.batch_norm off; MaskConfig.whiten off; MaskConfig.recorrupt off; all steps in stage 2; stage 2 not initialised from stage 1),
# and the same UNet trained on clean targets (an upper reference for self-supervised methods): --methods only
ABLATIONS_ON_REQUEST = ["ours, float32", "ours, mean not kept", "ours, contrast not kept", "ours, no batch norm",
                        "ours, no whitening", "ours, blind spots", "ours, stage 1 skipped", "ours, stage 2 from scratch"]
ON_REQUEST = ABLATIONS_ON_REQUEST + ["supervised"]
BRIGHT_FRACTION = 0.05
NOT_RUN = "CAREamics: not run (no --careamics-python)"


# ----------------------------------------------------------------------------- metrics

def linear_fit(output: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """(a, b) minimising the squared error of a * output + b to the reference."""
    x = np.asarray(output, np.float64).ravel()
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(reference, np.float64).ravel(), rcond=None)
    return float(a), float(b)


def bright_bias(output: np.ndarray, reference: np.ndarray, fraction: float = BRIGHT_FRACTION) -> float:
    """Mean of output - reference over the brightest `fraction` of reference pixels (ties included)."""
    reference = np.asarray(reference, np.float64)
    bright = reference >= np.quantile(reference, 1.0 - fraction)
    return float(np.mean(np.asarray(output, np.float64)[bright] - reference[bright]))


def quality_metrics(output: np.ndarray, reference: np.ndarray) -> dict:
    """PSNR raw and after the linear fit, SSIM, bright-pixel bias and the fit itself (data range 1)."""
    output = np.asarray(output, np.float32)
    reference = np.asarray(reference, np.float32)
    a, b = linear_fit(output, reference)
    fitted = (a * output.astype(np.float64) + b).astype(np.float32)
    return {
        "psnr": float(peak_signal_noise_ratio(reference, output, data_range=1.0)),
        "psnr_fit": float(peak_signal_noise_ratio(reference, fitted, data_range=1.0)),
        "ssim": float(structural_similarity(reference, output, data_range=1.0)),
        "bias": bright_bias(output, reference),
        "fit_a": a,
        "fit_b": b,
    }


# ----------------------------------------------------------------------------- which mask a CAREamics user picks

def careamics_preset(family: str) -> str | None:
    """The CAREamics line preset a user would pick for a noise family; None where none fits
    (uncorrelated noise needs none; diagonal and 2D anisotropic noise have no CAREamics preset)."""
    if family in ("white", "poisson", "aniso", "diagonal", "antidiagonal"):
        return None
    if family.endswith("_v"):
        return "vertical"
    return "horizontal"  # *_h, PMT filtering along x, row banding


def no_preset_reason(family: str) -> str:
    return "uncorrelated" if family in ("white", "poisson") else "no preset"


def true_mask(noise: real_set.Noise) -> np.ndarray:
    return crop_mask(real_set.true_support(noise))


def careamics_jobs(methods: list[str], noise: real_set.Noise, budget: Budget, seed: int, threads: int) -> dict[str, dict]:
    """The runner settings of each CAREamics method that applies to this noise, by method name."""
    defaults = Config()
    accelerator = {"cuda": "gpu", "mps": "mps"}.get(resolve_device(defaults.device).type, "cpu")  # where ours trains
    common = dict(steps=budget.steps, steps_per_epoch=budget.steps_per_epoch, patch_size=budget.patch_size,
                  batch_size=budget.batch_size,
                  depth=defaults.depth, base_channels=defaults.base_channels, seed=seed, threads=threads,
                  accelerator=accelerator)
    axis = careamics_preset(noise.family)
    jobs = {}
    for method in methods:
        if method == "CAREamics N2V":
            jobs[method] = careamics_client.runner_settings(axis="none", **common)
        elif method.startswith("CAREamics structN2V") and axis is not None:
            span = 5 if method.endswith(" 5") else careamics_client.best_span(true_mask(noise), axis)
            jobs[method] = careamics_client.runner_settings(axis=axis, span=span, **common)
    return jobs


# ----------------------------------------------------------------------------- one case

def _row(image: str, noise: real_set.Noise, seed: int, method: str, output: np.ndarray, reference: np.ndarray,
         seconds: float) -> dict:
    return {"image": image, "image_class": real_set.image_class(image), "family": noise.family, "sigma": noise.sigma,
            "seed": seed, "method": method, "seconds": seconds, **quality_metrics(output, reference)}


def run_case(image: str, noise: real_set.Noise, seed: int, methods: list[str], budget: Budget,
             careamics_python=None, threads: int = 1, log=None, work_dir=None) -> list[dict]:
    """All `methods` on one (image, noise, seed): one row each, with the metrics against the reference.

    A CAREamics structN2V method with no preset for this noise gets a row with `na` set and no
    metrics. CAREamics methods are skipped when `careamics_python` is None; their runs share one
    subprocess per case (its start-up time is in `overhead_seconds`, not in `seconds`).
    """
    reference, noisy = real_set.make_case(image, noise, seed)
    oracle = true_mask(noise)
    rows: dict[str, dict] = {}
    trained = None

    def note(row: dict) -> None:
        if log:
            extra = f" mask {row['mask_text']} IoU {row['iou']:.2f}" if "mask_text" in row else ""
            extra += f" ({row['note']})" if row.get("note") else ""
            log(f"{image:>7} {noise.family:>9} s={noise.sigma:g} seed={seed} {row['method']:<26} PSNR {row['psnr']:6.2f}"
                f" fit {row['psnr_fit']:6.2f} bias {row['bias']:+.3f} {row['seconds']:6.1f} s{extra}")

    for method in [m for m in OURS_METHODS + ON_REQUEST if m in methods]:
        mask = model = None
        with stopwatch() as elapsed:
            if method == "noisy":
                output = noisy
            elif method == "N2V" or (method == "structN2V true mask" and oracle.sum() == 1 and "N2V" not in methods):
                output, _, _ = run_training(noisy, one_stage_config(budget, seed, struct=False), CENTRE_ONLY)
                mask = CENTRE_ONLY
            elif method == "supervised":
                output = denoise(train_supervised(noisy, reference, budget, seed), noisy)
            elif method in ABLATIONS_ON_REQUEST:
                model, mask, _ = train_model(noisy, ABLATIONS[method](ours_config(budget, seed)), None)
                output = denoise(model, noisy)
            elif method == "structN2V true mask":
                if oracle.sum() == 1:  # centre-only truth: one-stage structN2V is N2V, the same run
                    rows[method] = {**rows["N2V"], "method": method, "reused": "N2V"}
                    note(rows[method])
                    continue
                output, mask, _ = run_training(noisy, one_stage_config(budget, seed, struct=True), oracle)
            else:  # ours, predicting with blind spots (the default) or in one direct pass: one model for both
                if trained is None:
                    with stopwatch() as training:
                        trained = train_model(noisy, ours_config(budget, seed), None)
                model, mask, _ = trained
                with stopwatch() as inference:
                    output = denoise(model, noisy, blind_spot=method == "ours")
        seconds = training() + inference() if method in OURS_METHODS[3:] else elapsed()
        row = _row(image, noise, seed, method, output, reference, 0.0 if method == "noisy" else seconds)
        if mask is not None:
            row.update(mask=np.asarray(mask, bool).astype(int).tolist(), mask_text=describe_mask(mask),
                       true_text=describe_mask(oracle), **mask_metrics(mask, oracle))
            if model is not None and model.whitening is not None:
                row["mask_text"] += ", " + ", ".join(w.describe() for w in model.whitening if w is not None)
            if model is not None and model.struct_mask is None and model.whitening is None:
                row["mask_text"] += ", recorrupted pairs (not masked)"
        rows[method] = row
        note(row)

    wanted = [m for m in CAREAMICS_METHODS if m in methods]
    if wanted and careamics_python is not None:
        jobs = careamics_jobs(wanted, noise, budget, seed, threads)
        for method in wanted:
            if method not in jobs:
                rows[method] = {"image": image, "image_class": real_set.image_class(image), "family": noise.family,
                                "sigma": noise.sigma, "seed": seed, "method": method,
                                "na": no_preset_reason(noise.family)}
        names = [m for m in wanted if m in jobs]
        same = "CAREamics structN2V 5" in names and "CAREamics structN2V best" in names and (
            jobs["CAREamics structN2V 5"] == jobs["CAREamics structN2V best"])
        if same:  # the best span is 5: one run serves both
            names.remove("CAREamics structN2V best")
        if names:
            with tempfile.TemporaryDirectory(dir=work_dir) as folder:
                results, overhead = careamics_client.run_jobs(
                    careamics_python, [(noisy, jobs[m]) for m in names], folder)
            for method, result in zip(names, results):
                settings = jobs[method]
                row = _row(image, noise, seed, method, result.output, reference, result.result["seconds"])
                row.update(careamics={k: result.result.get(k) for k in (
                    "trainer_steps", "logged_steps", "epochs", "batches_per_epoch", "final_learning_rate",
                    "train_seconds", "predict_seconds", "careamics", "torch", "threads", "used")},
                    axis=settings["struct_axis"], span=settings["struct_span"] if settings["struct_axis"] != "none" else None,
                    overhead_seconds=overhead / len(names))
                if result.notes:
                    row["note"] = "; ".join(result.notes)
                rows[method] = row
                note(row)
            if same:
                rows["CAREamics structN2V best"] = {**rows["CAREamics structN2V 5"],
                                                    "method": "CAREamics structN2V best",
                                                    "reused": "CAREamics structN2V 5"}
    return [rows[m] for m in methods if m in rows]


# ----------------------------------------------------------------------------- summaries

def aggregate(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """{(image, family, sigma): {method: {metric: mean, metric_std: std, n, na, mask_text, ...}}}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["image"], row["family"], row["sigma"], row["method"])].append(row)
    summary: dict[tuple, dict[str, dict]] = defaultdict(dict)
    for (image, family, sigma, method), group in groups.items():
        entry = {"n": len(group), "image_class": group[0]["image_class"]}
        measured = [r for r in group if "na" not in r]
        if not measured:
            entry["na"] = group[0]["na"]
        for key in ("psnr", "psnr_fit", "ssim", "bias", "seconds", "iou"):
            values = [r[key] for r in measured if key in r]
            if values:
                entry[key], entry[f"{key}_std"] = mean_std(values)
        for key in ("mask_text", "true_text", "span", "axis"):
            values = sorted({str(r[key]) for r in measured if r.get(key) is not None})
            if values:
                entry[key] = ", ".join(values)
        notes = sorted({r["note"] for r in measured if r.get("note")})
        if notes:
            entry["note"] = "; ".join(notes)
        summary[(image, family, sigma)][method] = entry
    return summary


def _case_order(summary) -> list[tuple]:
    images = {name: i for i, name in enumerate(DEFAULT_IMAGES)}
    families = {name: i for i, name in enumerate(real_set.FAMILIES)}
    return sorted(summary, key=lambda k: (list(real_set.IMAGE_CLASSES).index(real_set.image_class(k[0])),
                                          images.get(k[0], 99), k[0], families.get(k[1], 99), k[1], k[2]))


def _cell(entry: dict | None, key: str, digits: int) -> str:
    if entry is None:
        return "-"
    if "na" in entry:
        return f"n/a ({entry['na']})"
    if key not in entry:
        return "-"
    return fmt_pm(entry[key], entry.get(f"{key}_std"), digits)


METRIC_TABLES = {"psnr": ("PSNR (dB)", 2), "psnr_fit": ("PSNR after a linear fit (dB)", 2),
                 "bias": ("intensity bias on the brightest 5 %", 3), "ssim": ("SSIM", 3)}


def targets(summary) -> list[dict]:
    """The issue's targets per case, with the numbers they compare (dB; None where a side is missing)."""
    out = []
    for key in _case_order(summary):
        image, family, sigma = key
        methods = summary[key]
        if "ours" not in methods or "psnr" not in methods["ours"]:
            continue
        ours = methods["ours"]
        correlated = real_set.Noise(family, sigma).correlated

        def psnr(method: str) -> float | None:
            return methods.get(method, {}).get("psnr")

        def check(name: str, value: float | None, reference: float | None, margin: float, text: str) -> None:
            holds = None if value is None or reference is None else value >= reference + margin
            out.append({"image": image, "family": family, "sigma": sigma, "target": name, "check": text,
                        "value": value, "reference": reference,
                        "gap": None if holds is None else value - reference - margin, "holds": holds})

        gap = ours["psnr_fit"] - ours["psnr"]
        out.append({"image": image, "family": family, "sigma": sigma, "target": "unbiased",
                    "check": "ours: linear-fit PSNR - raw PSNR < 0.5 dB", "value": gap, "reference": 0.5,
                    "gap": 0.5 - gap, "holds": gap < 0.5})
        if correlated:
            check("vs noisy", ours["psnr"], psnr("noisy"), 5.0, "ours >= noisy + 5 dB")
            check("vs true mask", ours["psnr"], psnr("structN2V true mask"), -0.5,
                  "ours >= structN2V true mask - 0.5 dB")
            careamics = [psnr(m) for m in ("CAREamics structN2V 5", "CAREamics structN2V best") if psnr(m) is not None]
            if careamics:
                check("vs CAREamics", ours["psnr"], max(careamics), 0.0, "ours >= best CAREamics structN2V preset")
        else:
            check("vs N2V", ours["psnr"], psnr("N2V"), -0.2, "ours >= N2V - 0.2 dB (uncorrelated)")
        if family.startswith("pmt") or family == "banding":
            check("beats N2V", ours["psnr"], psnr("N2V"), 3.0, "ours >= N2V + 3 dB (PMT, banding)")
    return out


def tables(rows: list[dict]) -> dict[str, str]:
    """Markdown tables: per image class and metric (cases x methods), times, CAREamics settings, masks,
    targets (summary and per case)."""
    summary = aggregate(rows)
    keys = _case_order(summary)
    methods = []
    for row in rows:
        if row["method"] not in methods:
            methods.append(row["method"])
    out = {}
    for cls in real_set.IMAGE_CLASSES:
        class_keys = [k for k in keys if real_set.image_class(k[0]) == cls]
        if not class_keys:
            continue
        for metric, (_, digits) in METRIC_TABLES.items():
            table_rows = []
            for key in class_keys:
                cells = {"image": key[0], "family": key[1], "sigma": fmt(key[2], 2)}
                for method in methods:
                    cells[method] = _cell(summary[key].get(method), metric, digits)
                table_rows.append(cells)
            out[f"{metric}:{cls}"] = markdown_table(
                table_rows, [("image", "image"), ("family", "noise"), ("sigma", "sigma")] + [(m, m) for m in methods])

    time_rows = []
    for method in [m for m in methods if m != "noisy"]:
        measured = [r for r in rows if r["method"] == method and "na" not in r and not r.get("reused")]
        if not measured:
            continue
        cells = {"method": method, "runs": len(measured)}
        for cls in real_set.IMAGE_CLASSES:
            cells[cls] = fmt_pm(*mean_std([r["seconds"] for r in measured if r["image_class"] == cls]), 1)
        overhead = [r["overhead_seconds"] for r in measured if "overhead_seconds" in r]
        cells["overhead"] = fmt(float(np.mean(overhead)), 1) if overhead else "-"
        time_rows.append(cells)
    out["times"] = markdown_table(time_rows, [("method", "method"), ("runs", "runs")]
                                  + [(c, f"{c} (s)") for c in real_set.IMAGE_CLASSES]
                                  + [("overhead", "+ process start-up per run (s)")])

    careamics_rows = []
    for key in keys:
        for method in [m for m in methods if m.startswith("CAREamics")]:
            entry = summary[key].get(method)
            if entry is None:
                continue
            matching = [r for r in rows if (r["image"], r["family"], r["sigma"], r["method"]) == (*key, method)]
            info = next((r["careamics"] for r in matching if "careamics" in r), None)
            careamics_rows.append({
                "image": key[0], "family": key[1], "method": method,
                "mask": f"n/a ({entry['na']})" if "na" in entry else (
                    "none (N2V)" if entry.get("axis") in (None, "none") else f"{entry['axis']} {entry.get('span')}"),
                "true": describe_mask(true_mask(real_set.Noise(key[1], key[2]))),
                "steps": "-" if info is None else f"{info['trainer_steps']} (log {info['logged_steps']})",
                "epochs": "-" if info is None else f"{info['epochs']} x {info['batches_per_epoch']}",
                "patches": "-" if info is None else info["used"].get("train_patches_per_epoch"),
                "lr": "-" if info is None else f"{info['final_learning_rate']:.1e}",
                "note": entry.get("note", ""),
            })
    if careamics_rows:
        out["careamics"] = markdown_table(careamics_rows, [
            ("image", "image"), ("family", "noise"), ("method", "method"), ("mask", "CAREamics mask"),
            ("true", "true support"), ("steps", "optimiser steps (trainer, CSV log)"),
            ("epochs", "epochs x batches"), ("patches", "patches per epoch"), ("lr", "final learning rate"),
            ("note", "not as asked")])

    mask_rows = []
    for key in keys:
        entry = summary[key].get("ours")
        if entry and "mask_text" in entry:
            mask_rows.append({"image": key[0], "family": key[1], "sigma": fmt(key[2], 2), "true": entry.get("true_text"),
                              "estimated": entry["mask_text"], "iou": fmt_pm(entry["iou"], entry.get("iou_std"))})
    if mask_rows:
        out["masks"] = markdown_table(mask_rows, [("image", "image"), ("family", "noise"), ("sigma", "sigma"),
                                                  ("true", "true support"), ("estimated", "ours: estimated mask"),
                                                  ("iou", "IoU")])

    checks = targets(summary)
    summary_rows = []
    for name in dict.fromkeys(c["target"] for c in checks):
        group = [c for c in checks if c["target"] == name]
        decided = [c for c in group if c["holds"] is not None]
        misses = [c for c in decided if not c["holds"]]
        summary_rows.append({"check": group[0]["check"], "holds": f"{len(decided) - len(misses)}/{len(decided)}",
                             "misses": ", ".join(f"{c['image']}/{c['family']}" for c in misses) or "-"})
    out["targets"] = markdown_table(summary_rows, [("check", "target"), ("holds", "holds"), ("misses", "misses")])
    out["target_cases"] = markdown_table(
        [{"image": c["image"], "family": c["family"], "check": c["check"], "value": fmt(c["value"]),
          "reference": fmt(c["reference"]), "gap": fmt(c["gap"]),
          "holds": "-" if c["holds"] is None else ("yes" if c["holds"] else "no")} for c in checks],
        [("image", "image"), ("family", "noise"), ("check", "target"), ("value", "ours (dB)"),
         ("reference", "compared with (dB)"), ("gap", "margin (dB)"), ("holds", "holds")])
    return out


def title(name: str) -> str:
    metric, _, cls = name.partition(":")
    if cls:
        return f"{cls}: {METRIC_TABLES[metric][0]}, mean ± std over seeds"
    return {"times": "Wall time per run (training + denoising), mean ± std",
            "careamics": "CAREamics runs: mask, steps as counted by its trainer and CSV log",
            "masks": "Ours: estimated mask against the true correlation support",
            "targets": "Targets of issue 8 (summary)",
            "target_cases": "Targets of issue 8, per case (raw PSNR except the linear-fit row)"}.get(name, name)


def render(out: dict[str, str]) -> str:
    return "\n\n".join(f"### {title(name)}\n\n{table}" for name, table in out.items())


# ----------------------------------------------------------------------------- command line

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality --suite real",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", nargs="+", default=DEFAULT_IMAGES,
                        help=f"images of benchmarks/real_set.py (default {' '.join(DEFAULT_IMAGES)})")
    parser.add_argument("--families", nargs="+", default=DEFAULT_FAMILIES,
                        help=f"noise families, or 'all' (default {' '.join(DEFAULT_FAMILIES)}); all: "
                             f"{' '.join(real_set.FAMILIES)}")
    parser.add_argument("--sigmas", nargs="+", type=float, default=[0.1], help="noise levels (default 0.1)")
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds (default 1)")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds are first-seed, first-seed + 1, ... (default 0; --merge joins runs of other seeds)")
    parser.add_argument("--steps", type=int, default=200, help="optimiser steps per method, both stages (default 200)")
    parser.add_argument("--steps-per-epoch", type=int, default=20, help="default 20")
    parser.add_argument("--batch", "--batch-size", dest="batch", type=int, default=16, help="default 16")
    parser.add_argument("--patch", "--patch-size", dest="patch", type=int, default=64, help="default 64")
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"default all: {ALL_METHODS}; on request: {ON_REQUEST}")
    parser.add_argument("--careamics-python", default=None,
                        help="CAREamics interpreter (default: benchmarks/.venv-careamics/bin/python if present, "
                             "else $CAREAMICS_PYTHON; created by benchmarks/peers/setup_careamics.sh)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, ours and CAREamics (default 1)")
    parser.add_argument("--out", default=None, help="folder for the JSON (default benchmarks/results)")
    parser.add_argument("--name", default="quality_real", help="JSON file name without .json")
    parser.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                        help="only print the tables of these result files together (runs split over cases)")
    parser.add_argument("--later-wins", action="store_true",
                        help="with --merge: a run in a later file replaces the same run in an earlier one")
    args = parser.parse_args(argv)
    if args.families == ["all"]:
        args.families = list(real_set.FAMILIES)
    unknown = sorted(set(args.families) - set(real_set.FAMILIES))
    if unknown:
        parser.error(f"unknown noise families {unknown}; choose from {list(real_set.FAMILIES)} or 'all'")
    images = set(DEFAULT_IMAGES) | set(real_set.BUNDLED)
    if set(args.images) - images:
        parser.error(f"unknown images {sorted(set(args.images) - images)}; choose from {sorted(images)}")
    methods = args.methods or ALL_METHODS
    known = ALL_METHODS + ON_REQUEST
    if set(methods) - set(known):
        parser.error(f"unknown methods {sorted(set(methods) - set(known))}; choose from {known}")
    args.methods = [m for m in known if m in methods]
    return args


def careamics_status(python, methods: list[str]) -> str:
    if not any(m in CAREAMICS_METHODS for m in methods):
        return "CAREamics: not run (not among --methods)"
    if python is None:
        return NOT_RUN
    return f"CAREamics: {python}"


def merge(paths: list[str], args: argparse.Namespace) -> dict:
    """The tables of several result files together; their rows must not overlap (same case and method)."""
    import json

    rows, wall, statuses = [], 0.0, []
    for path in paths:
        data = json.loads(Path(path).read_text())
        rows += data["rows"]
        wall += data.get("wall_seconds", 0.0)
        statuses.append(data.get("careamics", "-"))
    keys = [(r["image"], r["family"], r["sigma"], r["seed"], r["method"]) for r in rows]
    if len(set(keys)) != len(keys):
        if not getattr(args, "later_wins", False):
            raise SystemExit("the files share runs (same image, noise, sigma, seed and method); merge disjoint runs "
                             "or pass --later-wins")
        latest = {key: row for key, row in zip(keys, rows)}  # a later file's row replaces an earlier one
        rows = [latest[key] for key in dict.fromkeys(keys)]
    out = tables(rows)
    status = "; ".join(dict.fromkeys(statuses))
    print(f"Real-image set: merged {len(paths)} files, {len(rows)} rows, wall time of the files summed (replaced "
          f"runs included) {wall:.0f} s\n{status}\n\n"
          + render(out))
    payload = {"args": vars(args), "merged": paths, "wall_seconds": wall, "careamics": status, "rows": rows,
               "tables": out, "targets": targets(aggregate(rows))}
    print(f"\nwritten {write_json(args.name, payload, args.out)}", file=sys.stderr)
    return payload


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.merge:
        return merge(args.merge, args)
    limit_threads(args.threads)
    budget = Budget(steps=args.steps, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch,
                    patch_size=args.patch)
    python = careamics_client.find_python(args.careamics_python)
    if python is not None and not Path(python).exists():
        raise SystemExit(f"--careamics-python {python} does not exist")
    status = careamics_status(python, args.methods)
    print(status, file=sys.stderr, flush=True)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows = []
    base = {"args": vars(args), "budget": dataclasses.asdict(budget), "ours_config": Config().to_dict(),
            "careamics": status}
    with stopwatch() as total:
        for image in args.images:
            for family in args.families:
                for sigma in args.sigmas:
                    for seed in range(args.first_seed, args.first_seed + args.seeds):
                        rows += run_case(image, real_set.Noise(family, sigma), seed, args.methods, budget, python,
                                         args.threads, log)
                        write_json(args.name, {**base, "partial": True, "rows": rows}, args.out)
    out = tables(rows)
    header = (f"Real-image set: images {' '.join(args.images)}; noise {' '.join(args.families)}; sigma "
              f"{' '.join(f'{s:g}' for s in args.sigmas)}; {args.seeds} seed(s) from {args.first_seed}; "
              f"budget {budget.steps} steps x batch {budget.batch_size} x patch {budget.patch_size} per method; "
              f"{args.threads} torch thread(s); "
              f"total wall time {total():.0f} s\n{status}")
    print(header + "\n\n" + render(out))
    payload = {**base, "wall_seconds": total(), "rows": rows, "tables": out, "targets": targets(aggregate(rows))}
    print(f"\nwritten {write_json(args.name, payload, args.out)}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
