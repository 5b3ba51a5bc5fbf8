"""Chunked denoising: lazy dask arrays and OME-Zarr stores equal in-memory `denoise`; resuming; dask clusters."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr  # the `zarr` extra, installed with `testing`: a missing extra fails here instead of skipping

from napari_autostructn2v import fit, make_sample, save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.chunked import (
    ResumeError, denoise_lazy, denoise_zarr, open_zarr_image, processing_chunks,
)
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.inference import denoise  # noqa: E402
from conftest import make_tiny_config  # noqa: E402

SRC = Path(__file__).resolve().parents[1] / "src"
AXES = [{"name": "z", "type": "space"}, {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"}]


@pytest.fixture(scope="module")
def model():
    return fit(make_sample((96, 96))[1], make_tiny_config())


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    return save_model(model, tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture(scope="module")
def stack():
    """Two slices of an odd size: the last chunks along Y and X are partial."""
    return np.stack([make_sample((150, 134), seed=seed)[1] for seed in (0, 1)])


@pytest.fixture(scope="module")
def reference(model, stack):
    return denoise(model, stack)


def write_ome_zarr(path: Path, data: np.ndarray, chunks, zarr_format: int = 2) -> Path:
    """An OME-Zarr image of two levels (full resolution and half), NGFF 0.4 (format 2) or 0.5 (format 3)."""
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    for level, array in (("0", data), ("1", data[..., ::2, ::2])):
        group.create_array(level, shape=array.shape, chunks=chunks, dtype=array.dtype)[...] = array
    multiscales = [{"version": "0.4" if zarr_format == 2 else "0.5", "name": "cells", "axes": AXES, "datasets": [
        {"path": level, "coordinateTransformations": [{"type": "scale", "scale": [1.0, factor * 0.5, factor * 0.5]}]}
        for level, factor in (("0", 1), ("1", 2))]}]
    if zarr_format == 2:
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": "0.5", "multiscales": multiscales}
    return path


def files_of(folder: Path) -> dict:
    return {path: path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_processing_chunks_start_on_the_pooling_grid_and_are_never_smaller_than_the_margin():
    assert processing_chunks(1000, 256, 32, 4) == (256, 256, 256, 232)
    assert processing_chunks(530, 512, 32, 4) == (530,)  # an 18-pixel rest joins the chunk before
    assert processing_chunks(20, 512, 32, 4) == (20,)
    assert processing_chunks(300, 50, 32, 4) == (52, 52, 52, 52, 52, 40)  # rounded up to the grid


@pytest.mark.parametrize("chunk", [48, 64, 100])
def test_lazy_denoising_equals_denoising_in_memory(model, stack, reference, chunk):
    lazy = denoise_lazy(model, stack, chunk=chunk)
    assert isinstance(lazy, da.Array) and lazy.dtype == np.float32 and lazy.shape == stack.shape
    assert len(lazy.chunks[-1]) > 1 and len(lazy.chunks[-2]) > 1
    np.testing.assert_allclose(lazy.compute(scheduler="synchronous"), reference, atol=1e-5)


def test_lazy_denoising_of_an_oddly_chunked_dask_array(model, stack, reference):
    source = da.from_array(stack, chunks=(2, 37, 41))
    np.testing.assert_allclose(denoise_lazy(model, source, chunk=64)[1, 40:120, 7:99].compute(),
                               reference[1, 40:120, 7:99], atol=1e-5)


def test_lazy_denoising_checks_its_input(model):
    with pytest.raises(InputError, match="RGB"):
        denoise_lazy(model, da.zeros((64, 64, 3)))
    with pytest.raises(InputError, match="tile_size"):
        denoise_lazy(model, da.zeros((64, 64)), tile_size=8)


def test_ome_zarr_is_denoised_chunk_by_chunk_with_its_metadata(model, stack, reference, tmp_path):
    source = write_ome_zarr(tmp_path / "in.ome.zarr", stack, chunks=(1, 64, 64))
    before = files_of(source)
    reports = []
    run = denoise_zarr(model, source, tmp_path / "out.zarr", chunk=64, on_block=lambda done, total: reports.append(
        (done, total)))
    assert files_of(source) == before
    # 150 = 64 + 86 and 134 = 64 + 70: rests under the 32-pixel margin join the block before
    assert run.computed == 2 * 2 * 2 and run.skipped == 0 and not run.resumed
    assert reports[0] == (0, 8) and reports[-1] == (8, 8)
    output = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    np.testing.assert_allclose(output["0"][...], reference, atol=1e-4)
    assert output["0"].chunks == (1, 64, 64)
    multiscale = output.attrs["multiscales"][0]
    assert multiscale["version"] == "0.4" and multiscale["axes"] == AXES
    assert multiscale["datasets"] == [{"path": "0", "coordinateTransformations": [
        {"type": "scale", "scale": [1.0, 0.5, 0.5]}]}]
    assert output.attrs["autostructn2v"]["complete"] is True


def test_ngff_05_groups_and_plain_arrays_are_read(model, stack, tmp_path):
    image = open_zarr_image(write_ome_zarr(tmp_path / "v3.zarr", stack, chunks=(1, 64, 64), zarr_format=3))
    assert image.array.shape == stack.shape and image.axes == AXES and image.scale == [1.0, 0.5, 0.5]
    plain = zarr.create_array(str(tmp_path / "plain.zarr"), shape=stack.shape, chunks=(1, 50, 50), dtype="f4")
    plain[...] = stack
    image = open_zarr_image(tmp_path / "plain.zarr")
    assert [axis["name"] for axis in image.axes] == ["z", "y", "x"]
    group = zarr.open_group(str(tmp_path / "bare.zarr"), mode="w")
    group.create_array("raw", shape=(8, 8), dtype="u2")
    with pytest.raises(InputError, match="bare.zarr/raw"):
        open_zarr_image(tmp_path / "bare.zarr")


def test_a_local_cluster_of_two_workers_gives_the_local_result(model, stack, tmp_path):
    import distributed

    source = write_ome_zarr(tmp_path / "in.zarr", stack, chunks=(1, 64, 64))
    denoise_zarr(model, source, tmp_path / "local.zarr", chunk=64)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        run = denoise_zarr(model, source, tmp_path / "cluster.zarr", chunk=64, scheduler=cluster.scheduler_address)
    assert run.computed == 8
    local = zarr.open_group(str(tmp_path / "local.zarr"), mode="r")["0"][...]
    np.testing.assert_array_equal(zarr.open_group(str(tmp_path / "cluster.zarr"), mode="r")["0"][...], local)


def test_an_interrupted_run_resumes_and_keeps_the_chunks_written(model, stack, reference, tmp_path):
    source = write_ome_zarr(tmp_path / "in.zarr", stack, chunks=(1, 64, 64))
    target = tmp_path / "out.zarr"

    def interrupt(done, total):
        if done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        denoise_zarr(model, source, target, chunk=64, model_digest="a", on_block=interrupt)
    written = {path: path.stat().st_mtime_ns for path in (target / "0").rglob("*") if path.is_file()
               and not path.name.startswith(".")}
    assert len(written) >= 5  # zarr chunk files, of at least 5 blocks
    assert zarr.open_group(str(target), mode="r").attrs["autostructn2v"]["complete"] is False
    with pytest.raises(ResumeError, match="different model_sha256"):
        denoise_zarr(model, source, target, chunk=64, model_digest="b")
    run = denoise_zarr(model, source, target, chunk=64, model_digest="a")
    assert run.resumed and run.skipped >= 5 and run.skipped + run.computed == 8
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in written.items())  # not written again
    np.testing.assert_allclose(zarr.open_group(str(target), mode="r")["0"][...], reference, atol=1e-4)
    with pytest.raises(ResumeError, match="is complete"):
        denoise_zarr(model, source, target, chunk=64, model_digest="a")
    assert denoise_zarr(model, source, target, chunk=64, model_digest="a", overwrite=True).computed == 8


def test_a_folder_that_is_not_our_store_is_never_replaced(model, stack, tmp_path):
    source = write_ome_zarr(tmp_path / "in.zarr", stack, chunks=(1, 64, 64))
    folder = tmp_path / "precious.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ResumeError, match="never replaced"):
        denoise_zarr(model, source, folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "keep me"


def test_cli_denoises_a_zarr_store_and_refuses_unsafe_outputs(model, model_file, stack, reference, tmp_path, capsys):
    source = write_ome_zarr(tmp_path / "in.zarr", stack, chunks=(1, 64, 64))
    out = tmp_path / "out.ome.zarr"
    assert main(["-q", "denoise", str(source), "-m", str(model_file), "-o", str(out), "--chunk-size", "64"]) == 0
    np.testing.assert_allclose(zarr.open_group(str(out), mode="r")["0"][...], reference, atol=1e-4)
    tif = tmp_path / "a.tif"
    tifffile.imwrite(tif, stack[0])
    for args, fragment in [
        ([str(source), "-o", str(source)], "is or contains the input"),
        ([str(source), "-o", str(source / "inside.zarr")], "is or contains the input"),
        ([str(source / "0"), "-o", str(source / "sibling.zarr")], "is or contains the input"),
        ([str(source), "-o", str(tmp_path / "out.tif")], "give a name ending in .zarr"),
        ([str(source), "-o", str(out)], "is complete; add --overwrite"),
        ([str(source), str(source), "-o", str(tmp_path / "two.zarr")], "one zarr store per command"),
        ([str(tif), "-o", str(tmp_path / "b.tif"), "--scheduler", "processes"], "--scheduler applies to zarr"),
    ]:
        capsys.readouterr()
        assert main(["denoise", *args, "-m", str(model_file)]) == 2, args
        assert fragment in capsys.readouterr().err, args


def test_a_killed_command_resumes(model_file, stack, tmp_path, capsys):
    source = write_ome_zarr(tmp_path / "in.zarr", np.concatenate([stack] * 3), chunks=(1, 32, 32))
    target = tmp_path / "out.zarr"
    command = [sys.executable, "-m", "napari_autostructn2v.cli", "-q", "denoise", str(source), "-m", str(model_file),
               "-o", str(target), "--chunk-size", "32"]
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None and len(list((target / "0").rglob("*/*/*"))) < 8:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    assert main(["denoise", str(source), "-m", str(model_file), "-o", str(target), "--chunk-size", "32"]) == 0
    assert "resumed:" in capsys.readouterr().err
    from napari_autostructn2v import load_model

    expected = denoise(load_model(model_file), np.concatenate([stack] * 3))
    np.testing.assert_allclose(zarr.open_group(str(target), mode="r")["0"][...], expected, atol=1e-4)
