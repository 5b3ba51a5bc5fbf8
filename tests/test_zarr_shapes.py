"""Chunked denoising (lazy dask arrays, OME-Zarr stores, the command line) of channel and 3D models.

Each result is compared with in-memory `denoise` of the whole array. The 3D models are shallow (depth 1,
receptive radius about 10 voxels) and run with margins of 12 instead of 32: the equality holds for any
margin above the receptive radius, and smaller margins keep 3D tests quick. The chunked path runs other tiles
(smaller ones, inside chunks) than `denoise`, and convolutions of other sizes may round differently in
the last bits, so the comparison allows 1e-5 (the values are about 1); the measured difference is 0
or a few 1e-7.
"""

import dask.array as da
import numpy as np
import pytest
import zarr

from conftest import make_channel_image, make_channel_volume, make_random_model
from napari_autostructn2v import save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.chunked import denoise_lazy, denoise_zarr, open_zarr_image
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.inference import denoise

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def channel_model():
    return make_random_model(channels=2, axes="CYX")


OVERLAP_3D = 12


@pytest.fixture(scope="module")
def volume_model():
    return make_random_model(network="3d", channels=1, axes="ZYX", depth=1, base_channels=4)


@pytest.fixture(scope="module")
def volume_channel_model():
    return make_random_model(network="3d", channels=2, axes="CZYX", depth=1, base_channels=4)


def write_store(path, data, chunks, axes_names):
    """An OME-Zarr group (NGFF 0.4) with one level."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype)[...] = data
    kinds = {"t": "time", "c": "channel", "z": "space", "y": "space", "x": "space"}
    group.attrs["multiscales"] = [{"version": "0.4", "name": "image",
                                   "axes": [{"name": name, "type": kinds[name]} for name in axes_names],
                                   "datasets": [{"path": "0", "coordinateTransformations": [
                                       {"type": "scale", "scale": [1.0] * data.ndim}]}]}]
    return path


def test_channels_are_never_split_and_the_result_equals_denoise(channel_model):
    image = np.moveaxis(make_channel_image((150, 134)), 0, -1)  # channels last: YXC
    lazy = denoise_lazy(channel_model, image, chunk=48, axes="YXC")
    assert lazy.chunks[-1] == (2,) and len(lazy.chunks[0]) > 1 and len(lazy.chunks[1]) > 1
    assert lazy.dtype == np.float32 and lazy.shape == image.shape
    expected = denoise(channel_model, image, axes="YXC")
    assert all(expected[..., c].std() > 0.1 * channel_model.normalisation.channel(c).std for c in (0, 1))  # not flat
    assert np.abs(lazy.compute(scheduler="synchronous") - expected).max() <= TOLERANCE


def test_a_dask_array_chunked_across_channels_is_rechunked_whole(channel_model):
    stack = np.stack([make_channel_image((100, 90)), make_channel_image((100, 90))[::-1]])  # TCYX
    source = da.from_array(stack, chunks=(2, 1, 37, 41))
    lazy = denoise_lazy(channel_model, source, chunk=48, axes="TCYX")
    assert lazy.chunks[1] == (2,)
    assert np.abs(lazy[1, :, 20:90, 7:80].compute() - denoise(channel_model, stack, axes="TCYX")[1, :, 20:90, 7:80]
                  ).max() <= TOLERANCE


def test_3d_models_are_chunked_in_z_with_margins_too(volume_channel_model):
    volume = np.moveaxis(make_channel_volume((72, 40, 36), 2), 0, 1)  # ZCYX
    lazy = denoise_lazy(volume_channel_model, volume, chunk=32, axes="ZCYX", overlap=OVERLAP_3D, tile_size=48)
    assert lazy.chunks[0] == (32, 40) and lazy.chunks[1] == (2,)  # Z in chunks (the 8-plane rest joins), C whole
    expected = denoise(volume_channel_model, volume, axes="ZCYX", overlap=OVERLAP_3D)
    assert np.abs(lazy.compute(scheduler="synchronous") - expected).max() <= TOLERANCE


def test_models_that_do_not_fit_the_axes_are_refused_before_anything_runs(channel_model, volume_model):
    with pytest.raises(InputError, match="trained on 2 channel"):
        denoise_lazy(channel_model, da.zeros((3, 64, 64)), axes="CYX")
    with pytest.raises(InputError, match="give axes with C"):
        denoise_lazy(channel_model, da.zeros((4, 2, 64, 64)))  # the model's CYX does not fit 4 dimensions
    with pytest.raises(InputError, match="3D network"):
        denoise_lazy(volume_model, da.zeros((4, 64, 64)), axes="TYX")
    with pytest.raises(InputError, match="names 3 axes"):
        denoise_lazy(volume_model, da.zeros((64, 64)), axes="ZYX")


def test_a_3d_model_denoises_a_zarr_volume_chunk_by_chunk(volume_model, tmp_path):
    volume = make_channel_volume((72, 72, 40))[0]
    source = write_store(tmp_path / "volume.zarr", volume, (16, 32, 32), "zyx")
    run = denoise_zarr(volume_model, source, tmp_path / "out.zarr", chunk=32, overlap=OVERLAP_3D)
    assert run.computed == 2 * 2 * 1  # Z and Y: 32 + 40, X: 40 (rests under the margin join the chunk before)
    output = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert output["0"].chunks == (32, 32, 32) and output.attrs["autostructn2v"]["axes"] == "ZYX"
    expected = denoise(volume_model, volume, overlap=OVERLAP_3D)  # the model's axes: ZYX
    assert np.abs(output["0"][...] - expected).max() <= TOLERANCE


def test_command_line_reads_a_stores_axes_and_takes_axes_over_them(channel_model, tmp_path, capsys):
    model_file = save_model(channel_model, tmp_path / "model.pt")
    data = np.stack([make_channel_image((90, 80)), make_channel_image((90, 80), 2)[:, ::-1]])  # TCYX
    expected = denoise(channel_model, data, axes="TCYX")

    def run(names, *extra):
        source = write_store(tmp_path / f"{names}.zarr", data, (1, 1, 64, 64), names)
        out = tmp_path / f"{names}-{len(extra)}-out.zarr"
        code = main(["denoise", str(source), "-m", str(model_file), "-o", str(out), "--chunk-size", "48", "-q", *extra])
        return code, out

    code, out = run("tcyx")  # the store's OME-NGFF axes say where the channels are
    assert code == 0
    output = zarr.open_group(str(out), mode="r")
    assert output["0"].chunks == (1, 1, 48, 48)  # one channel per chunk, as OME-Zarr viewers expect
    assert [axis["name"] for axis in output.attrs["multiscales"][0]["axes"]] == list("tcyx")
    assert output.attrs["autostructn2v"]["axes"] == "TCYX"
    assert np.abs(output["0"][...] - expected).max() <= TOLERANCE
    assert run("tzyx")[0] == 2  # mislabelled: no channel axis for the model's two channels
    assert "give axes with C" in capsys.readouterr().err
    code, out = run("tzyx", "--axes", "TCYX")  # --axes overrides the metadata
    assert code == 0 and np.abs(zarr.open_group(str(out), mode="r")["0"][...] - expected).max() <= TOLERANCE


def test_axes_are_read_only_from_a_stores_metadata(tmp_path):
    data = np.zeros((2, 16, 16), np.float32)
    assert open_zarr_image(write_store(tmp_path / "described.zarr", data, (1, 16, 16), "cyx")).letters == "CYX"
    zarr.open_array(str(tmp_path / "bare.zarr"), mode="w", shape=data.shape, dtype=data.dtype, zarr_format=2)
    assert open_zarr_image(tmp_path / "bare.zarr").letters is None  # no metadata: stack of planes, as before
    odd = write_store(tmp_path / "odd.zarr", data, (1, 16, 16), "cyx")
    group = zarr.open_group(str(odd), mode="r+")
    multiscales = group.attrs["multiscales"]
    multiscales[0]["axes"][0] = {"name": "angle", "type": "angle"}
    group.attrs["multiscales"] = multiscales
    assert open_zarr_image(odd).letters is None  # a name this package has no letter for
