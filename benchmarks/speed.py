"""Speed: ROI selection, blind-spot masking, training and inference throughput, peak memory.

    python -m benchmarks.speed --quick     # about a minute or two on 2 CPU cores
    python -m benchmarks.speed             # adds 8192 x 8192 ROI selection and denoising

ROI selection is timed next to a straightforward implementation of the seed document's
algorithm (skimage rescale with anti-aliasing, Gaussian sigma 300, CLAHE, a Python double loop
of np.mean over windows), measured in the same run on the same image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from skimage.exposure import equalize_adapthist
from skimage.transform import rescale

from napari_autostructn2v import Config, StageConfig, denoise, preset_mask, select_roi_patches, train
from napari_autostructn2v.core import roi as core_roi
from napari_autostructn2v.core.masking import mask_batch
from napari_autostructn2v.core.model import DenoisingModel
from napari_autostructn2v.core.images import Normalisation
from napari_autostructn2v.core.sample import clean_image
from napari_autostructn2v.core.training import Step

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


# ----------------------------------------------------------------------------- CAREamics (optional)

def bench_careamics() -> dict:
    try:
        import careamics  # noqa: F401  (optional; pulls in lightning)
    except ImportError:
        return {"status": "not installed"}
    return {"status": f"installed ({careamics.__version__}) but not benchmarked by this suite"}


# ----------------------------------------------------------------------------- command line

def tables(results: dict) -> dict[str, str]:
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
    out["careamics"] = f"CAREamics: {results['careamics']['status']}."
    return out


TITLES = {
    "roi": "ROI selection (patch 64, scale 0.25): core vs the seed algorithm",
    "masking": "Blind-spot masking of one batch",
    "training": "Training throughput, default UNet, patch 64, batch 16",
    "inference": "Inference throughput (denoise, tiles 256, margin 32)",
    "memory": "Peak memory of denoising (fresh process)",
    "careamics": "CAREamics",
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
    parser.add_argument("--out", default=None)
    parser.add_argument("--name", default="speed")
    return parser.parse_args(argv)


def run(roi_sizes, inference_sizes, memory_size, train_steps, threads=1, log=None, compare_threads=True) -> dict:
    """All speed measurements; on the CPU training is also timed with 2 threads when `compare_threads`."""
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = {"roi": bench_roi(roi_sizes, log=log), "masking": bench_masking(), "training": [], "inference": [],
               "memory": []}
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
    results["careamics"] = bench_careamics()
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

    with stopwatch() as total:
        results = run(roi_sizes, inference_sizes, memory_size, train_steps, args.threads, log)
    out = tables(results)
    text = "\n\n".join(f"### {TITLES[name]}\n\n{table}" for name, table in out.items())
    print(f"Speed: total wall time {total():.0f} s (shared 2-core CPU: timings are noisy)\n\n{text}")
    payload = {"args": vars(args), "wall_seconds": total(), **results, "tables": out}
    path = write_json(args.name, payload, args.out)
    print(f"\nwritten {path}", file=sys.stderr)
    return payload


if __name__ == "__main__":
    main()
