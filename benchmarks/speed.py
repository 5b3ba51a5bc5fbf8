"""Speed: ROI selection, blind-spot masking, training and inference throughput, peak memory, CAREamics side by side.

    python -m benchmarks.speed --quick     # side by side 20 steps x 3 repeats: 15-30 min on a shared 2-core CPU
    python -m benchmarks.speed             # adds 8192 x 8192 ROI selection and denoising, 40 steps side by
                                           # side and a timed default `autostructn2v run` on a 1024² image
    python -m benchmarks.speed --top-level-only   # training step with and without Config.sparse_top_level
    python -m benchmarks.speed --previews-only    # training with previews, within their time budget and without

The side by side trains this project's N2V stage and CAREamics' N2V (in its own environment, see
benchmarks/peers) at the same width, depth, patch, batch and steps, one thread each, then times the
prediction of a 1024² image by each; repeats alternate between the two and medians are reported,
as wall time and as CPU time of the process (less sensitive to other users of the machine).

ROI selection is timed next to a straightforward implementation of the seed document's
algorithm (skimage rescale with anti-aliasing, Gaussian sigma 300, CLAHE, a Python double loop
of np.mean over windows), measured in the same run on the same image.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.exposure import equalize_adapthist
from skimage.transform import rescale

from napari_autostructn2v import Config, StageConfig, denoise, preset_mask, select_roi_patches, train
from napari_autostructn2v.core import roi as core_roi
from napari_autostructn2v.core.masking import mask_batch
from napari_autostructn2v.core.model import DenoisingModel, native_bfloat16
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.sample import clean_image
from napari_autostructn2v.core import training as core_training
from napari_autostructn2v.core.sample import make_sample
from napari_autostructn2v.core.training import Preview, StageFinished, StageStarted, Step
from napari_autostructn2v.core.unet import UNet

from .peers.careamics_client import find_python
from ._common import best_of, fmt, limit_threads, markdown_table, stopwatch, write_json


# ----------------------------------------------------------------------------- ROI selection

def speed_image(size: int, seed: int = 0) -> np.ndarray:
    """A size x size float32 image: the procedural sample (tiled beyond 1024 px) plus white noise."""
    tile = clean_image((min(size, 1024),) * 2, seed)
    reps = -(-size // tile.shape[0])
    image = np.tile(tile, (reps, reps))[:size, :size]
    rng = np.random.default_rng(seed)
    return (image + rng.normal(0, 0.05, image.shape).astype(np.float32)).astype(np.float32)


def seed_preprocess(image: np.ndarray, scale_factor: float = 0.25, sigma: float = 300) -> np.ndarray:
    """The seed document's preprocessing, as written: rescale, Gaussian sigma 300, CLAHE."""
    small = rescale(image, scale_factor, anti_aliasing=True)
    filtered = gaussian_filter(small, sigma=sigma)
    span = filtered.max() - filtered.min()
    filtered = (filtered - filtered.min()) / span if span > 0 else np.zeros_like(filtered)
    return equalize_adapthist(filtered)


def seed_windows(enhanced: np.ndarray, patch_size: int, threshold: float, scale_factor: float = 0.25,
                 overlap: float = 0.5, select_background: bool = True) -> list[tuple[int, int]]:
    """The seed document's sliding window: a Python double loop with np.mean per window."""
    window = max(1, round(patch_size * scale_factor))
    stride = max(1, int(window * (1 - overlap)))
    height, width = enhanced.shape
    coords = []
    for y in range(0, height - window + 1, stride):
        for x in range(0, width - window + 1, stride):
            mean_intensity = np.mean(enhanced[y: y + window, x: x + window])
            if (select_background and mean_intensity < threshold) or (not select_background and mean_intensity > threshold):
                coords.append((int(y / scale_factor), int(x / scale_factor)))
    return coords


def bench_roi(sizes: list[int], patch_size: int = 64, repeats: int = 3, seed_max_size: int = 8192,
              log=None) -> list[dict]:
    """First call (preprocessing + windows) and threshold change, core against the seed algorithm."""
    rows = []
    for size in sizes:
        image = speed_image(size)
        reps = repeats if size <= 2048 else 1
        first = best_of(lambda: select_roi_patches(image, patch_size, 0.5), reps, setup=core_roi._cache.clear)
        select_roi_patches(image, patch_size, 0.5)  # warm the cache
        change = best_of(lambda: select_roi_patches(image, patch_size, 0.4), 20)
        row = {"size": size, "core_first_s": first, "core_change_s": change,
               "core_selected": len(select_roi_patches(image, patch_size, 0.4))}
        if size <= seed_max_size:
            with stopwatch() as elapsed:
                enhanced = seed_preprocess(image)
            preprocess = elapsed()
            loop = best_of(lambda: seed_windows(enhanced, patch_size, 0.4), reps)
            row.update(seed_first_s=preprocess + loop, seed_change_s=loop,
                       first_ratio=(preprocess + loop) / first, change_ratio=loop / change,
                       seed_selected=len(seed_windows(enhanced, patch_size, 0.4)))
        rows.append(row)
        if log:
            log(f"ROI {size}: core first {first * 1e3:.1f} ms, change {change * 1e6:.0f} us; "
                f"seed first {row.get('seed_first_s', float('nan')):.2f} s, change {row.get('seed_change_s', float('nan')) * 1e3:.1f} ms")
    return rows


# ----------------------------------------------------------------------------- masking

def bench_masking(batch: int = 16, size: int = 64, repeats: int = 50) -> list[dict]:
    """Time to mask one (batch, 1, size, size) batch with fresh random blind spots."""
    patches = torch.randn(batch, 1, size, size)
    generator = torch.Generator().manual_seed(0)
    cases = [
        ("stage 1, N2V (random neighbour)", None, False),
        ("stage 1, N2V2 (median)", None, True),
        ("stage 2, horizontal 5 mask", preset_mask("horizontal", 5), False),
        ("stage 2, horizontal 13 mask", preset_mask("horizontal", 13), False),
        ("stage 2, 13x13 cross mask", preset_mask("cross", 13), False),
    ]
    rows = []
    for name, mask, median in cases:
        mask_batch(patches, 1.0, generator, mask, median=median)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            mask_batch(patches, 1.0, generator, mask, median=median)
        seconds = (time.perf_counter() - start) / repeats
        rows.append({"case": name, "ms_per_batch": seconds * 1e3, "us_per_patch": seconds * 1e6 / batch})
    return rows


# ----------------------------------------------------------------------------- training and inference

def bench_training(device: str, steps: int = 20, threads: int | None = None, base_channels: int = 16,
                   image_size: int = 256) -> list[dict]:
    """Patches per second of the core's training loop (sampling, masking, forward, backward, Adam)
    with the default UNet, patch 64, batch 16, for stage 1 (N2V) and stage 2 (structN2V, 1x5 mask).
    Time between consecutive steps of an epoch; the first steps (warm-up) and epoch ends are left out."""
    image = speed_image(image_size)
    stage = StageConfig(use_roi=False, epochs=1, steps_per_epoch=steps)
    config = Config(stage1=stage, stage2=stage, base_channels=base_channels, device=device, seed=0)
    times: dict[int, list[float]] = {1: [], 2: []}
    last = None
    for event in train(image, config, struct_mask=preset_mask("horizontal", 5), num_threads=threads):
        now = time.perf_counter()
        if isinstance(event, Step):
            if event.step > 3 and last is not None:
                times[event.stage].append(now - last)
            last = now
        else:
            last = None
    rows = []
    for stage_index, intervals in times.items():
        per_step = float(np.median(intervals))
        rows.append({"device": device, "threads": threads or torch.get_num_threads(), "base_channels": base_channels,
                     "stage": "stage 1 (N2V)" if stage_index == 1 else "stage 2 (structN2V 1x5)",
                     "patches_per_s": config.stage1.batch_size / per_step, "ms_per_step": per_step * 1e3})
    return rows


def bench_top_level(widths: tuple[int, ...] = (16, 32), steps: int = 6, depth: int = 2, patch: int = 64,
                    batch: int = 16, mask_percent: float = 1.0, batch_norms: tuple[bool, ...] = (False, True)
                    ) -> list[dict]:
    """CPU milliseconds of a training step (masking, forward, backward, Adam) with the whole network and with
    the top level computed around the blind spots only (Config.sparse_top_level), the two alternating step by
    step in this process so that the machine's load hits both alike; medians after one warm-up step each.
    Without batch norms (the default network) the two compute the same; with them, almost."""
    rows = []
    for width, batch_norm in itertools.product(widths, batch_norms):
        torch.manual_seed(0)
        net = UNet(width, depth, batch_norm=batch_norm).train()
        optimiser = torch.optim.Adam(net.parameters(), lr=1e-4)
        patches = torch.randn(batch, 1, patch, patch)
        generator = torch.Generator().manual_seed(0)
        times: dict[bool, list[float]] = {False: [], True: []}
        for step in range(steps + 1):
            for sparse in (False, True):
                start = time.process_time()
                inputs, blind = mask_batch(patches, mask_percent, generator)
                predicted = net.forward_at(inputs, blind) if sparse else net(inputs)[blind]
                loss = torch.mean((predicted - patches[blind]) ** 2)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                if step:
                    times[sparse].append(time.process_time() - start)
        full, sparse = (float(np.median(times[key])) * 1e3 for key in (False, True))
        rows.append({"base_channels": width, "batch_norm": batch_norm, "full_ms": full, "sparse_ms": sparse,
                     "speedup": full / sparse})
    return rows


def bench_previews(size: int = 512, every: int = 20) -> list[dict]:
    """The default pipeline on a `size`² sample, 40 + 160 steps, a preview every `every` steps: within the preview
    time budget (core.training.PREVIEW_SHARE) and with every due preview shown (the budget switched off, as before
    it existed), one after the other. Stage 2's one-line mask makes its previews blind-spot ones (8 passes)."""
    noisy = make_sample((size, size), "horizontal", 0.1, seed=0)[1]
    defaults = Config(seed=0)
    config = dataclasses.replace(defaults, stage1=dataclasses.replace(defaults.stage1, epochs=1, steps_per_epoch=40),
                                 stage2=dataclasses.replace(defaults.stage2, epochs=4, steps_per_epoch=40))
    steps = 200
    rows, share = [], core_training.PREVIEW_SHARE
    for label, budget in (("within the budget (now)", share), ("every due preview (before)", float("inf"))):
        core_training.PREVIEW_SHARE = budget  # the module constant `train` reads; restored below
        try:
            with stopwatch() as wall:
                cpu = time.process_time()
                shown = sum(isinstance(event, Preview) for event in train(noisy, config, preview_every=every))
                cpu = time.process_time() - cpu
        finally:
            core_training.PREVIEW_SHARE = share
        rows.append({"previews": label, "shown": shown, "due": steps // every, "seconds": wall(), "cpu_seconds": cpu})
    return rows


def _untrained_model(device: str) -> DenoisingModel:
    torch.manual_seed(0)
    model = DenoisingModel.create(Config(), Normalisation(0.5, 0.2))
    model.net.to(device).eval()
    return model


def bench_inference(device: str, sizes: list[int]) -> list[dict]:
    """Megapixels per second of `denoise` (tiles of 256 with 32 px margins, batches of 4)."""
    model = _untrained_model(device)
    rows = []
    denoise(model, speed_image(256))  # warm-up
    for size in sizes:
        image = speed_image(size)
        seconds = best_of(lambda: denoise(model, image), 2 if size <= 1024 else 1)
        rows.append({"device": device, "size": size, "seconds": seconds, "mpix_per_s": size * size / 1e6 / seconds})
    return rows


PEAK_SCRIPT = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np, torch
    torch.set_num_threads({threads})
    from napari_autostructn2v import Config, denoise
    from napari_autostructn2v.core.images import Normalisation
    from napari_autostructn2v.core.model import DenoisingModel
    size = {size}
    model = DenoisingModel.create(Config(), Normalisation(0.5, 0.2))
    model.net.to("{device}").eval()
    denoise(model, np.zeros((256, 256), np.float32))
    def current_mib():
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    before = current_mib()
    image = np.random.default_rng(0).random((size, size), dtype=np.float32)
    start = time.perf_counter()
    output = denoise(model, image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gpu = torch.cuda.max_memory_allocated() / 2**20 if "{device}" == "cuda" else None
    print(json.dumps({{"peak_mib": peak, "before_mib": before, "seconds": seconds, "gpu_mib": gpu}}))
""")


def bench_peak_memory(size: int, device: str = "cpu", threads: int = 1) -> dict:
    """Peak resident memory (ru_maxrss) of a fresh process denoising a size x size float32 image, and
    its increase over the resident memory just before the image was made (torch and the model loaded,
    one small warm-up denoise done): that increase holds the image, the output and the working memory."""
    script = PEAK_SCRIPT.format(size=size, device=device, threads=threads)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout.strip().splitlines()[-1])
    image_mib = size * size * 4 / 2**20
    return {"device": device, "size": size, "image_mib": image_mib, **data,
            "increase_mib": data["peak_mib"] - data["before_mib"],
            "mpix_per_s": size * size / 1e6 / data["seconds"]}


# ----------------------------------------------------------------------------- side by side with CAREamics

def ours_side_by_side(train_image: np.ndarray, predict_image: np.ndarray, *, width: int, depth: int, patch: int,
                      batch: int, steps: int, steps_per_epoch: int, seed: int = 0,
                      sparse_top_level: bool | None = Config.sparse_top_level,
                      mixed_precision: bool = Config.mixed_precision) -> dict:
    """N2V training (stage 1 alone, random patches, validation each epoch) for `steps` steps, from the
    call to the end of the stage, then the default `denoise` of `predict_image`: wall and CPU seconds."""
    stage = StageConfig(use_roi=False, epochs=steps // steps_per_epoch, steps_per_epoch=steps_per_epoch,
                        patch_size=patch, batch_size=batch)
    config = Config(stage1=stage, stage2=StageConfig(use_roi=False, epochs=0), base_channels=width, depth=depth,
                    device="cpu", seed=seed, sparse_top_level=sparse_top_level, mixed_precision=mixed_precision)
    wall, cpu = time.perf_counter(), time.process_time()
    events = train(train_image, config, num_threads=1)
    for event in events:
        if isinstance(event, StageStarted):
            model = event.model
        if isinstance(event, StageFinished):
            break
    events.close()
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    model.net.eval()
    wall, cpu = time.perf_counter(), time.process_time()
    denoise(model, predict_image)
    return {"train_seconds": train_wall, "train_cpu_seconds": train_cpu,
            "predict_seconds": time.perf_counter() - wall, "predict_cpu_seconds": time.process_time() - cpu}


CAREAMICS_PRECISIONS = ("32-true", "bf16-mixed")  # Lightning's names; 32-true is CAREamics' default


def side_by_side_tools(careamics_precisions: tuple[str, ...]) -> dict[str, dict]:
    """The variants measured side by side: this project as configured by default (bfloat16 where the CPU has
    AMX), in float32 too when that differs, and CAREamics at each of `careamics_precisions`."""
    native = native_bfloat16(torch.device("cpu"))
    tools = {f"this project ({'bfloat16' if native else 'float32'}, its default)":
             {"side": "ours", "mixed_precision": True, "precision": "bfloat16" if native else "float32"}}
    if native:
        tools["this project (float32)"] = {"side": "ours", "mixed_precision": False, "precision": "float32"}
    for precision in careamics_precisions:
        kind, default = ("float32", ", its default") if precision == "32-true" else ("bfloat16", "")
        tools[f"CAREamics ({kind}{default})"] = {"side": "careamics", "lightning_precision": precision,
                                                 "precision": kind}
    return tools


def bench_side_by_side(python, *, width: int = 32, depth: int = 2, patch: int = 64, batch: int = 16, steps: int = 40,
                       steps_per_epoch: int = 20, train_size: int = 256, predict_size: int = 1024, repeats: int = 3,
                       work_dir=None, log=None, sparse_top_level: bool | None = Config.sparse_top_level,
                       careamics_precisions: tuple[str, ...] = ("32-true",)) -> dict:
    """This project and CAREamics at the same network and budget, one thread each, in every precision variant
    (`side_by_side_tools`); each repeat runs the variants in another order (rotated), so that the machine's
    load hits all alike; medians."""
    from .peers.careamics_client import CareamicsError, run_jobs, runner_settings

    train_image, predict_image = speed_image(train_size, seed=1), speed_image(predict_size, seed=2)
    work_dir = Path(work_dir or tempfile.mkdtemp(prefix="speed_careamics_"))
    work_dir.mkdir(parents=True, exist_ok=True)
    predict_path = work_dir / "predict.npy"
    np.save(predict_path, predict_image)
    settings = {**runner_settings(steps=steps, patch_size=patch, batch_size=batch, depth=depth, base_channels=width,
                                  steps_per_epoch=steps_per_epoch, threads=1), "predict_input": str(predict_path)}
    tools = side_by_side_tools(careamics_precisions)
    runs: dict[str, list[dict]] = {name: [] for name in tools}
    notes: list[str] = []

    def measure(name: str, index: int) -> dict:
        tool = tools[name]
        if tool["side"] == "ours":
            return ours_side_by_side(train_image, predict_image, width=width, depth=depth, patch=patch, batch=batch,
                                     steps=steps, steps_per_epoch=steps_per_epoch, sparse_top_level=sparse_top_level,
                                     mixed_precision=tool["mixed_precision"])
        job_settings = {**settings, "precision": tool["lightning_precision"]}
        (job,), _ = run_jobs(python, [(train_image, job_settings)], work_dir / f"repeat{index}_{len(runs[name])}")
        notes.extend(note for note in job.notes if note not in notes)
        result = job.result
        return {"train_seconds": result["train_seconds"], "train_cpu_seconds": result["train_cpu_seconds"],
                "predict_seconds": result["predict_input_seconds"],
                "predict_cpu_seconds": result["predict_input_cpu_seconds"]}

    names = list(tools)
    for index in range(repeats):
        for name in names[index % len(names):] + names[: index % len(names)]:
            try:
                runs[name].append(measure(name, index))
            except CareamicsError as err:
                return {"status": f"CAREamics failed: {str(err).splitlines()[0]}", "runs": runs}
        if log:
            log(f"side by side, repeat {index + 1}/{repeats}: " + "; ".join(f"{n} {runs[n][-1]}" for n in names))
    megapixels = predict_size**2 / 1e6
    rows = {}
    for name, measured in runs.items():
        median = {key: float(np.median([m[key] for m in measured])) for key in measured[0]}
        rows[name] = {**median, "steps_per_s": steps / median["train_seconds"],
                      "steps_per_cpu_s": steps / median["train_cpu_seconds"],
                      "mpix_per_s": megapixels / median["predict_seconds"],
                      "mpix_per_cpu_s": megapixels / median["predict_cpu_seconds"]}
    ratios = {}
    ours = [name for name in names if tools[name]["side"] == "ours"]
    theirs = [name for name in names if tools[name]["side"] == "careamics"]
    default_pair = next(((ours[0], b) for b in theirs if tools[b]["lightning_precision"] == "32-true"), None)
    pairs = ([("each at its default", *default_pair)] if default_pair else []) + [
        (f"both in {tools[a]['precision']}", a, b) for a in ours for b in theirs
        if tools[a]["precision"] == tools[b]["precision"] and (a, b) != default_pair]
    for label, a, b in pairs:
        ratios[label] = {key: rows[a][key] / rows[b][key]
                         for key in ("steps_per_s", "steps_per_cpu_s", "mpix_per_s", "mpix_per_cpu_s")}
    return {"status": "measured", "settings": {"width": width, "depth": depth, "patch": patch, "batch": batch,
                                               "steps": steps, "steps_per_epoch": steps_per_epoch,
                                               "train_size": train_size, "predict_size": predict_size,
                                               "repeats": repeats, "threads": 1,
                                               "sparse_top_level": sparse_top_level},
            "tools": tools, "runs": runs, "rows": rows, "ratio": ratios, "notes": notes}


def bench_default_run(size: int = 1024, threads: int | None = None) -> dict:
    """Wall and CPU time (of the child process) of a default `autostructn2v run` on a size x size sample
    with horizontal line noise; torch threads as the command chooses them unless `threads` is given."""
    from napari_autostructn2v.core.sample import make_sample

    import tifffile

    folder = Path(tempfile.mkdtemp(prefix="speed_run_"))
    source = folder / "noisy.tif"
    tifffile.imwrite(source, make_sample((size, size), "horizontal", 0.1, seed=0)[1])
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    else:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(name, None)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "napari_autostructn2v.cli", "run", str(source), "-o", str(folder / "out.tif"),
                    "--quiet"], check=True, env=env, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"size": size, "threads": threads or "chosen by the command", "seconds": wall, "cpu_seconds": cpu,
            "load_before": load}


# ----------------------------------------------------------------------------- command line

def tables(results: dict) -> dict[str, str]:
    if "roi" not in results:  # --side-by-side-only
        return comparison_tables(results)
    out = {}
    roi_rows = [{
        "size": f"{r['size']}²", "core_first": fmt(r["core_first_s"] * 1e3, 1), "seed_first": fmt(r.get("seed_first_s"), 2),
        "first_ratio": fmt(r.get("first_ratio"), 0), "core_change": fmt(r["core_change_s"] * 1e3, 3),
        "seed_change": fmt(None if "seed_change_s" not in r else r["seed_change_s"] * 1e3, 1),
        "change_ratio": fmt(r.get("change_ratio"), 0),
    } for r in results["roi"]]
    out["roi"] = markdown_table(roi_rows, [
        ("size", "image"), ("core_first", "core first call (ms)"), ("seed_first", "seed first call (s)"),
        ("first_ratio", "speed-up"), ("core_change", "core threshold change (ms)"),
        ("seed_change", "seed window loop (ms)"), ("change_ratio", "speed-up")])
    out["masking"] = markdown_table(
        [{"case": r["case"], "ms": fmt(r["ms_per_batch"], 2), "us": fmt(r["us_per_patch"], 1)} for r in results["masking"]],
        [("case", "16 x 64 x 64 batch"), ("ms", "ms per batch"), ("us", "µs per patch")])
    out["training"] = markdown_table(
        [{"device": r["device"], "threads": r["threads"], "channels": r["base_channels"], "stage": r["stage"],
          "pps": fmt(r["patches_per_s"], 0), "ms": fmt(r["ms_per_step"], 0)} for r in results["training"]],
        [("device", "device"), ("threads", "torch threads"), ("channels", "base channels"), ("stage", "stage"),
         ("pps", "patches/s"), ("ms", "ms per step (batch 16)")])
    out["inference"] = markdown_table(
        [{"device": r["device"], "size": f"{r['size']}²", "s": fmt(r["seconds"], 2), "mps": fmt(r["mpix_per_s"], 2)}
         for r in results["inference"]],
        [("device", "device"), ("size", "image"), ("s", "seconds"), ("mps", "megapixels/s")])
    out["memory"] = markdown_table(
        [{"device": r["device"], "size": f"{r['size']}²", "image": fmt(r["image_mib"], 0), "peak": fmt(r["peak_mib"], 0),
          "increase": fmt(r["increase_mib"], 0), "s": fmt(r["seconds"], 1), "mps": fmt(r["mpix_per_s"], 2)}
         for r in results["memory"]],
        [("device", "device"), ("size", "image"), ("image", "image (MiB)"), ("peak", "peak RSS (MiB)"),
         ("increase", "peak - RSS before the image (MiB)"), ("s", "seconds"), ("mps", "megapixels/s")])
    return {**out, **comparison_tables(results)}


def comparison_tables(results: dict) -> dict[str, str]:
    out = {"careamics": side_by_side_table(results["careamics"])}
    if results.get("top_level"):
        out["top_level"] = top_level_table(results["top_level"])
    if results.get("previews"):
        out["previews"] = markdown_table(
            [{**row, "seconds": fmt(row["seconds"], 0), "cpu_seconds": fmt(row["cpu_seconds"], 0)}
             for row in results["previews"]],
            [("previews", "previews"), ("shown", "shown"), ("due", "due"), ("seconds", "wall (s)"),
             ("cpu_seconds", "CPU time (s)")])
    run = results.get("default_run")
    out["default_run"] = "not measured (--run-size 0)." if not run else markdown_table(
        [{"size": f"{run['size']}²", "threads": run["threads"], "s": fmt(run["seconds"], 0),
          "cpu": fmt(run["cpu_seconds"], 0), "load": fmt(run["load_before"], 1)}],
        [("size", "image"), ("threads", "torch threads"), ("s", "wall (s)"), ("cpu", "CPU time (s)"),
         ("load", "load average at the start")])
    return out


def top_level_table(rows: list[dict]) -> str:
    return markdown_table(
        [{"width": r["base_channels"], "norms": "yes" if r.get("batch_norm", True) else "no",
          "full": fmt(r["full_ms"], 0), "sparse": fmt(r["sparse_ms"], 0), "speedup": fmt(r["speedup"], 2)}
         for r in rows],
        [("width", "base channels"), ("norms", "batch norm"), ("full", "whole network (CPU ms/step)"),
         ("sparse", "top level at the blind spots (CPU ms/step)"), ("speedup", "speed-up")])


def side_by_side_table(side: dict) -> str:
    if side.get("status") != "measured":
        return f"CAREamics: {side.get('status')}."
    columns = (("steps", "steps_per_s", 3), ("steps_cpu", "steps_per_cpu_s", 3), ("mps", "mpix_per_s", 3),
               ("mps_cpu", "mpix_per_cpu_s", 3))
    rows = [{"tool": name, **{column: fmt(values[key], digits) for column, key, digits in columns}}
            for name, values in side["rows"].items()]
    rows += [{"tool": f"ratio (this project / CAREamics), {label}",
              **{column: fmt(values[key], 2) for column, key, _ in columns}}
             for label, values in side["ratio"].items()]
    config = side["settings"]
    caption = (f"UNet depth {config['depth']}, {config['width']} base channels, patch {config['patch']}, batch "
               f"{config['batch']}, {config['steps']} steps (epochs of {config['steps_per_epoch']}) on a "
               f"{config['train_size']}² image, then prediction of a {config['predict_size']}² image; 1 thread each, "
               f"medians of {config['repeats']} repeats in rotated order.")
    notes = f"\n\nCAREamics did not run as asked: {'; '.join(side['notes'])}." if side["notes"] else ""
    return caption + "\n\n" + markdown_table(rows, [
        ("tool", "tool"), ("steps", "training steps/s (wall)"), ("steps_cpu", "training steps per CPU second"),
        ("mps", "inference MP/s (wall)"), ("mps_cpu", "inference MP per CPU second")]) + notes


TITLES = {
    "roi": "ROI selection (patch 64, scale 0.25): core vs the seed algorithm",
    "masking": "Blind-spot masking of one batch",
    "training": "Training throughput, default UNet, patch 64, batch 16",
    "inference": "Inference throughput (denoise, tiles 256, margin 32)",
    "memory": "Peak memory of denoising (fresh process)",
    "top_level": "Training step: whole network vs top level at the blind spots (Config.sparse_top_level), "
                 "depth 2, patch 64, batch 16, 1 % blind spots",
    "careamics": "Side by side with CAREamics, same network and budget",
    "default_run": "A default `autostructn2v run`",
    "previews": "Training with a preview every 20 steps (512² sample, 200 steps)",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="ROI at 512 and 2048, memory at 2048 (a minute or two)")
    parser.add_argument("--roi-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--inference-sizes", nargs="+", type=int, default=None)
    parser.add_argument("--memory-size", type=int, default=None)
    parser.add_argument("--train-steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for the suite (default 1); training is also timed with 2")
    parser.add_argument("--careamics-python", default=None,
                        help="CAREamics' interpreter (default: benchmarks/.venv-careamics, else $CAREAMICS_PYTHON)")
    parser.add_argument("--no-careamics", action="store_true", help="skip the side by side with CAREamics")
    parser.add_argument("--width", type=int, default=32, help="base channels of both UNets side by side (default 32, "
                        "CAREamics' default)")
    parser.add_argument("--side-steps", type=int, default=None, help="training steps side by side (40; quick: 20)")
    parser.add_argument("--side-repeats", type=int, default=3, help="alternating repeats side by side (default 3)")
    parser.add_argument("--run-size", type=int, default=None,
                        help="image side of the timed default `autostructn2v run` (1024; quick: 0 = skipped)")
    parser.add_argument("--side-by-side-only", action="store_true",
                        help="only the side by side with CAREamics and the default run")
    parser.add_argument("--top-level-only", action="store_true",
                        help="only the training step with and without Config.sparse_top_level (a minute)")
    parser.add_argument("--previews-only", action="store_true",
                        help="only training with previews, within their time budget and without (about 8 minutes)")
    parser.add_argument("--sparse-top-level", choices=["on", "off"], default=None,
                        help="Config.sparse_top_level for this project's side of the side by side (default: the "
                             "Config default)")
    parser.add_argument("--careamics-precision", nargs="+", choices=CAREAMICS_PRECISIONS, default=["32-true"],
                        help="Lightning precisions CAREamics is measured in side by side (default: 32-true, its "
                             "default; add bf16-mixed to compare both in bfloat16)")
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default="speed")
    return parser.parse_args(argv)


def run(roi_sizes, inference_sizes, memory_size, train_steps, threads=1, log=None, compare_threads=True,
        careamics_python=None, side_by_side=None, run_size=0, top_level_widths=(16, 32)) -> dict:
    """All speed measurements; on the CPU training is also timed with 2 threads when `compare_threads`.
    With `careamics_python`, the side by side (`side_by_side`: keyword arguments of bench_side_by_side);
    with `run_size`, a default `autostructn2v run` on an image of that side."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"roi": bench_roi(roi_sizes, log=log), "masking": bench_masking(), "training": [], "inference": [],
               "memory": [], "top_level": bench_top_level(top_level_widths)}
    for device in devices:
        for count in sorted({threads, 2}) if device == "cpu" and compare_threads else [threads]:
            results["training"] += bench_training(device, train_steps, threads=count)
        torch.set_num_threads(threads)
        results["inference"] += bench_inference(device, inference_sizes)
        if memory_size:
            results["memory"].append(bench_peak_memory(memory_size, device, threads))
        if log:
            log(f"{device}: training {results['training'][-1]['patches_per_s']:.0f} patches/s, "
                f"inference {results['inference'][-1]['mpix_per_s']:.2f} MP/s")
    if careamics_python:
        results["careamics"] = bench_side_by_side(careamics_python, log=log, **(side_by_side or {}))
    else:
        results["careamics"] = {"status": "not run (no CAREamics interpreter found, or --no-careamics)"}
    results["default_run"] = bench_default_run(run_size) if run_size else None
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    limit_threads(args.threads)
    quick = args.quick
    roi_sizes = args.roi_sizes or ([512, 2048] if quick else [512, 2048, 8192])
    inference_sizes = args.inference_sizes or ([512, 1024] if quick else [512, 2048])
    memory_size = args.memory_size if args.memory_size is not None else (2048 if quick else 8192)
    train_steps = args.train_steps or (12 if quick else 30)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    python = None if args.no_careamics else find_python(args.careamics_python)
    if python is not None and not Path(python).exists():
        python = None
    side_by_side = {"width": args.width, "steps": args.side_steps or (20 if quick else 40),
                    "repeats": args.side_repeats, "careamics_precisions": tuple(args.careamics_precision)}
    if args.sparse_top_level:
        side_by_side["sparse_top_level"] = args.sparse_top_level == "on"
    run_size = args.run_size if args.run_size is not None else (0 if quick else 1024)
    with stopwatch() as total:
        if args.top_level_only:
            results = {"careamics": {"status": "not run (--top-level-only)"}, "top_level": bench_top_level()}
        elif args.previews_only:
            results = {"careamics": {"status": "not run (--previews-only)"}, "previews": bench_previews()}
        elif args.side_by_side_only:
            results = {"careamics": bench_side_by_side(python, log=log, **side_by_side) if python else
                       {"status": "not run (no CAREamics interpreter found)"},
                       "default_run": bench_default_run(run_size) if run_size else None}
        else:
            results = run(roi_sizes, inference_sizes, memory_size, train_steps, args.threads, log,
                          careamics_python=python, side_by_side=side_by_side, run_size=run_size)
    out = tables(results)
    text = "\n\n".join(f"### {TITLES[name]}\n\n{table}" for name, table in out.items())
    print(f"Speed: total wall time {total():.0f} s (shared 2-core CPU: timings are noisy)\n\n{text}")
    payload = {"args": vars(args), "wall_seconds": total(), **results, "tables": out}
    path = write_json(args.name, payload, args.out)
    print(f"\nwritten {path}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
