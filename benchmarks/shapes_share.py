"""bioimage.io packages and chunked denoising of channel and 3D models, with the default network.

    python -m benchmarks.shapes_share                  # both parts, 1 thread (several minutes on a CPU)
    python -m benchmarks.shapes_share --skip-chunked   # the bioimage.io part only

The models are untrained (16 channels, depth 2, the default widths) with their output layer scaled up
so that outputs vary about as much as the input: what is measured (equality, validity, time, size)
does not depend on training, and a nearly flat output would make the equalities trivial.

bioimage.io part, per model: export time, `bioimageio.core.test_model` (both weight formats), the
largest difference between bioimageio.core's prediction of a whole image or volume (larger than the
test tensor) and `denoise` (which tiles it), for each weight format, the largest difference between
`denoise` with the imported package and with the original model, and the package's size.

Chunked part: `denoise_lazy` against `denoise` of the whole array in memory, on a two-channel image
(chunks of 512, the default) and on a two-channel volume (chunks of 48 instead of the default 128, so
that a volume small enough for a CPU is cut along Z, Y and X).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ._common import limit_threads, markdown_table, write_json

DIFFS = ("diff_state_dict", "diff_torchscript", "diff_import")
CASES = {
    "2D, 2 channels": dict(network="2d", channels=2, separate=False),
    "2D, 2 channels, separate networks": dict(network="2d", channels=2, separate=True),
    "3D, 1 channel": dict(network="3d", channels=1, separate=False),
    "3D, 2 channels": dict(network="3d", channels=2, separate=False),
}


def untrained_model(network: str, channels: int, separate: bool, seed: int = 0):
    """The default network, untrained, each channel with its own normalisation, its output layer scaled up."""
    from napari_autostructn2v.core.config import Config
    from napari_autostructn2v.core.images import Normalisation
    from napari_autostructn2v.core.model import DenoisingModel

    torch.manual_seed(seed)
    normalisation = (Normalisation(1.0, 0.5) if channels == 1 else
                     Normalisation(tuple(1.0 + c for c in range(channels)), tuple(0.5 * (1 + c) for c in range(channels))))
    model = DenoisingModel.create(Config(network=network, separate_channels=separate, device="cpu"), normalisation)
    with torch.no_grad():
        model.net.head.weight.mul_(100)
    model.net.eval()
    model.axes = ("C" if channels > 1 else "") + ("ZYX" if network == "3d" else "YX")
    return model


def example(network: str, channels: int, size: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """(C, Y, X) or (C, Z, Y, X) structured-noise data, channel c in units about (1 + c) times the first's."""
    from napari_autostructn2v.core.sample import make_sample, make_volume

    make = make_volume if network == "3d" else make_sample
    return np.stack([make(size, seed=seed + c)[1] * (1 + c) + c for c in range(channels)])


def bioimageio_row(name: str, folder: Path) -> dict:
    from bioimageio.core import create_prediction_pipeline, load_model_description, predict, test_model

    from napari_autostructn2v import denoise, export_bioimageio, load_model

    case = CASES[name]
    model = untrained_model(**case)
    axes = "CZYX" if case["network"] == "3d" else "CYX"
    start = time.perf_counter()
    path = export_bioimageio(model, folder / f"{name.replace(' ', '_').replace(',', '')}.zip")
    row = {"model": name, "export_s": time.perf_counter() - start, "size_mb": path.stat().st_size / 1e6}
    start = time.perf_counter()
    summary = test_model(path)
    row["test_model"] = f"{summary.status} ({time.perf_counter() - start:.1f} s)"
    size = (24, 112, 100) if case["network"] == "3d" else (300, 270)
    data = example(case["network"], case["channels"], size, seed=5)
    expected = denoise(model, data, axes=axes)
    for weight_format, key in (("pytorch_state_dict", "diff_state_dict"), ("torchscript", "diff_torchscript")):
        pipeline = create_prediction_pipeline(load_model_description(path), weight_format=weight_format)
        (output,) = predict(model=pipeline, inputs=data[None]).members.values()
        row[key] = float(np.abs(output.data.values[0] - expected).max())
    row["diff_import"] = float(np.abs(denoise(load_model(path), data, axes=axes) - expected).max())
    row["output_std"] = float(min(expected[c].std() for c in range(case["channels"])))
    return row


def chunked_row(name: str, network: str, channels: int, size: tuple[int, ...], chunk: int) -> dict:
    from napari_autostructn2v.core.chunked import denoise_lazy
    from napari_autostructn2v.core.inference import denoise

    model = untrained_model(network, channels, False)
    data = example(network, channels, size, seed=7)
    axes = "CZYX" if network == "3d" else "CYX"
    start = time.perf_counter()
    expected = denoise(model, data, axes=axes)
    memory_s = time.perf_counter() - start
    lazy = denoise_lazy(model, data, axes=axes, chunk=chunk)
    start = time.perf_counter()
    chunked = lazy.compute(scheduler="threads", num_workers=1)
    return {"data": name, "chunks": " x ".join(str(len(c)) for c in lazy.chunks) + f" (chunk {chunk})",
            "memory_s": memory_s, "chunked_s": time.perf_counter() - start,
            "max_diff": float(np.abs(chunked - expected).max()), "value_range": float(np.ptp(expected))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-bioimageio", action="store_true")
    parser.add_argument("--skip-chunked", action="store_true")
    args = parser.parse_args(argv)
    limit_threads(args.threads)
    payload = {}
    if not args.skip_bioimageio:
        with tempfile.TemporaryDirectory(prefix="shapes-share-") as folder:
            rows = [bioimageio_row(name, Path(folder)) for name in CASES]
        payload["bioimageio"] = rows
        print(markdown_table([{**row, **{key: f"{row[key]:.1e}" for key in DIFFS}} for row in rows], [
            ("model", "model"), ("export_s", "export (s)"), ("test_model", "bioimageio.core test_model"),
            ("diff_state_dict", "max abs(core - denoise), state dict"), ("diff_torchscript", "same, TorchScript"),
            ("diff_import", "max abs(imported - original)"), ("output_std", "output std (smallest channel)"),
            ("size_mb", "package (MB)")]))
    if not args.skip_chunked:
        rows = [chunked_row("2 x 1024 x 1024 (CYX), 2D network", "2d", 2, (1024, 1024), 512),
                chunked_row("2 x 80 x 96 x 96 (CZYX), 3D network", "3d", 2, (80, 96, 96), 48)]
        payload["chunked"] = rows
        print(markdown_table([{**row, "max_diff": f"{row['max_diff']:.1e}"} for row in rows], [
            ("data", "data"), ("chunks", "blocks per axis"), ("memory_s", "in memory (s)"),
            ("chunked_s", "chunked (s)"), ("max_diff", "max abs(chunked - in memory)"),
            ("value_range", "output range")]))
    print(f"results: {write_json('shapes_share', payload)}")


if __name__ == "__main__":
    main()
