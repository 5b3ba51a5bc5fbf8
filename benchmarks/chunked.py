"""Chunked denoising of OME-Zarr and training from a folder: equality with in-memory results and peak memory.

    python -m benchmarks.chunked                 # 4 x 2048 x 2048 zarr, 50 TIFFs of 2048², 1 thread (minutes)
    python -m benchmarks.chunked --size 512 --files 10    # a quick run

Every measured command runs in a fresh process (the `autostructn2v` command line, or a cluster
around it) and reports its own peak resident memory (VmHWM, Linux), which counts memory-mapped
file pages while they are mapped. The zarr part compares the output of `denoise in.zarr -o out.zarr`
(threads, then a dask.distributed LocalCluster of 2 workers, then a run killed with SIGKILL and
started again) with `denoise` of the whole array in memory. The folder part trains on a folder of
TIFFs and compares the peak memory with the folder's size.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ._common import fmt, limit_threads, markdown_table, write_json

SRC = Path(__file__).resolve().parents[1] / "src"
CHILD = """
import json
from napari_autostructn2v.cli import main
args = json.loads({args!r})
cluster = None
if {cluster}:
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None)
    args += ["--scheduler", cluster.scheduler_address]
code = main(args)
if cluster is not None:
    cluster.close()
# VmHWM, not ru_maxrss: Linux keeps the parent's ru_maxrss across fork and exec
peak_kib = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(json.dumps({{"code": code, "peak_mib": peak_kib / 1024}}))
"""


def _environment(threads: int) -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def measured(args: list[str], threads: int, cluster: bool = False) -> dict:
    """Run the command line in a fresh process; its exit code, peak RSS (MiB), seconds and stderr."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", CHILD.format(args=json.dumps(args), cluster=cluster)],
                            env=_environment(threads), capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if result.returncode != 0 or not result.stdout.strip():
        raise RuntimeError(f"{args} failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return {**report, "seconds": seconds, "stderr": result.stderr}


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# ----------------------------------------------------------------------------- zarr


def make_zarr(path: Path, slices: int, size: int, chunk: int) -> np.ndarray:
    """An OME-Zarr (NGFF 0.4) image of `slices` noisy samples of size², chunks of 1 x chunk x chunk."""
    import zarr

    from napari_autostructn2v.core.sample import make_sample

    base = make_sample((min(size, 1024),) * 2, seed=0)[1]
    reps = -(-size // base.shape[0])
    rng = np.random.default_rng(1)
    data = np.stack([np.tile(np.roll(base, 97 * i, axis=1), (reps, reps))[:size, :size]
                     + rng.normal(0, 0.05, (size, size)).astype(np.float32) for i in range(slices)])
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=(1, chunk, chunk), dtype="float32")[...] = data
    group.attrs["multiscales"] = [{"version": "0.4", "name": "sample", "datasets": [{"path": "0"}], "axes": [
        {"name": "z", "type": "space"}, {"name": "y", "type": "space"}, {"name": "x", "type": "space"}]}]
    return data


def make_model(path: Path, data: np.ndarray, base_channels: int) -> None:
    """A model of depth 2 (the default) with `base_channels` channels, briefly trained on one slice."""
    from napari_autostructn2v import Config, fit, save_model

    config = Config(device="cpu", seed=0, base_channels=base_channels)
    for stage in (config.stage1, config.stage2):
        stage.epochs, stage.steps_per_epoch = 1, 10
    save_model(fit(data[0][:512, :512], config), path)


def zarr_part(work: Path, slices: int, size: int, chunk: int, threads: int, base_channels: int,
              tile_size: int | None) -> list[dict]:
    import zarr

    from napari_autostructn2v import denoise, load_model

    source, model_path = work / "in.zarr", work / "model.pt"
    data = make_zarr(source, slices, size, chunk)
    make_model(model_path, data, base_channels)
    start = time.perf_counter()
    reference = denoise(load_model(model_path), data, tile_size=1024)  # any tile size gives the same result
    in_memory_seconds = time.perf_counter() - start
    # by default one tile per chunk and its margins (32 pixels on each side, a merged rest under 32): fastest
    common = ["-q", "denoise", str(source), "-m", str(model_path), "--chunk-size", str(chunk),
              "--tile-size", str(tile_size or chunk + 128)]
    rows = [{"run": "in memory (reference, `denoise` of the whole array, tiles of 1024)", "seconds": in_memory_seconds,
             "data_mib": data.nbytes / 2**20}]

    def compare(target: Path) -> float:
        return float(np.abs(zarr.open_group(str(target), mode="r")["0"][...] - reference).max())

    for name, cluster in (("threads (1 worker)", False), ("LocalCluster, 2 workers", True)):
        target = work / f"out-{'cluster' if cluster else 'threads'}.zarr"
        result = measured([*common, "-o", str(target), "--overwrite"], threads, cluster=cluster)
        rows.append({"run": name, "seconds": result["seconds"], "peak_mib": result["peak_mib"],
                     "max_abs_diff": compare(target)})
    rows.append(killed_and_resumed(common, work / "out-resumed.zarr", threads) | {
        "max_abs_diff": compare(work / "out-resumed.zarr")})
    return rows


def killed_and_resumed(common: list[str], target: Path, threads: int) -> dict:
    """Kill the command (SIGKILL) once a quarter of the chunks are written, run it again, report the resume."""
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    process = subprocess.Popen([sys.executable, "-m", "napari_autostructn2v.cli", *common, "-o", str(target)],
                               env=_environment(threads), stderr=subprocess.DEVNULL)
    total = None
    while process.poll() is None:
        chunks = [path for path in (target / "0").rglob("*") if path.is_file() and not path.name.startswith(".")]
        if total is None and (target / "0" / ".zarray").is_file():
            total = int(np.prod([-(-n // c) for n, c in zip(*_shape_and_chunks(target))]))
        if total and len(chunks) >= total // 4:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.2)
    process.wait()
    kept = len([path for path in (target / "0").rglob("*") if path.is_file() and not path.name.startswith(".")])
    result = measured([*common, "-o", str(target)], threads)
    resumed = re.search(r"resumed: (\d+) chunk\(s\) were already written, (\d+) computed now", result["stderr"])
    return {"run": f"killed (SIGKILL, {kept} of {total} chunks written), run again",
            "seconds": result["seconds"], "peak_mib": result["peak_mib"],
            "resume": f"{resumed.group(1)} skipped, {resumed.group(2)} computed" if resumed else "did not resume"}


def _shape_and_chunks(target: Path):
    metadata = json.loads((target / "0" / ".zarray").read_text())
    return metadata["shape"], metadata["chunks"]


# ----------------------------------------------------------------------------- folder


def folder_part(work: Path, files: int, size: int, threads: int) -> dict:
    """Train on `files` TIFFs of size² float32 (2 short epochs: the memory, not the model, is measured)."""
    import tifffile

    from napari_autostructn2v import Config
    from napari_autostructn2v.core.sample import make_sample

    folder = work / "tiffs"
    folder.mkdir(parents=True, exist_ok=True)
    bases = [make_sample((min(size, 1024),) * 2, seed=seed)[1] for seed in range(2)]
    reps = -(-size // bases[0].shape[0])
    for index in range(files):
        path = folder / f"image_{index:03d}.tif"
        if not path.exists():
            tile = np.tile(np.roll(bases[index % 2], 31 * index, axis=0), (reps, reps))[:size, :size]
            tifffile.imwrite(path, tile.astype(np.float32))
    config = Config(device="cpu", seed=0)
    for stage in (config.stage1, config.stage2):
        stage.epochs, stage.steps_per_epoch = 1, 20
    config_path = work / "train.json"
    config.to_json(config_path)
    result = measured(["-q", "train", str(folder), "-o", str(work / "folder-model.pt"), "--config", str(config_path),
                       "--overwrite"], threads)
    return {"files": files, "size": size, "folder_mib": folder_size(folder) / 2**20, "peak_mib": result["peak_mib"],
            "seconds": result["seconds"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=2048, help="side of the zarr slices and of the TIFFs")
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--files", type=int, default=50)
    parser.add_argument("--tile-size", type=int, default=None,
                        help="tile size of the chunked runs (default: chunk + 128, one tile per chunk; smaller tiles "
                             "need less memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--base-channels", type=int, default=16,
                        help="channels of the zarr part's network (16, the default architecture; fewer run faster)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/autostructn2v-chunked-benchmark"),
                        help="folder for the generated data (about 1 GB at full size)")
    parser.add_argument("--skip-folder", action="store_true")
    parser.add_argument("--skip-zarr", action="store_true")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict = {"settings": {k: str(v) for k, v in vars(args).items()}}
    if not args.skip_zarr:
        results["zarr"] = zarr_part(args.work, args.slices, args.size, args.chunk, args.threads, args.base_channels,
                                    args.tile_size)
        print(f"## Chunked OME-Zarr denoising: {args.slices} x {args.size} x {args.size} float32, chunks of "
              f"{args.chunk}, tiles of {args.tile_size or args.chunk + 128}, {args.base_channels}-channel network, "
              f"{args.threads} thread(s)\n")
        print(markdown_table(
            [{**row, "seconds": fmt(row["seconds"], 1), "peak_mib": fmt(row.get("peak_mib"), 0),
              "max_abs_diff": fmt(row.get("max_abs_diff"), 8) if "max_abs_diff" in row else None}
             for row in results["zarr"]],
            [("run", "run"), ("seconds", "seconds"), ("peak_mib", "peak RSS (MiB)"),
             ("max_abs_diff", "max |chunked - in memory|"), ("resume", "resume")]))
        print()
    if not args.skip_folder:
        row = folder_part(args.work, args.files, args.size, args.threads)
        results["folder"] = row
        print(f"## Training from a folder: {args.files} TIFFs of {args.size}² float32, {args.threads} thread(s)\n")
        print(markdown_table([{**row, "folder_mib": fmt(row["folder_mib"], 0), "peak_mib": fmt(row["peak_mib"], 0),
                               "seconds": fmt(row["seconds"], 1)}],
                             [("files", "files"), ("folder_mib", "folder (MiB)"), ("peak_mib", "peak RSS (MiB)"),
                              ("seconds", "seconds")]))
    path = write_json("chunked", results)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
