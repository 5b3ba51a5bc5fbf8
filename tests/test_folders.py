"""Folders and patterns of TIFFs: finding them, memory-mapped slices, training with bounded memory, mirrored outputs."""

import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_autostructn2v import fit, make_sample, save_model
from napari_autostructn2v.cli import main
from napari_autostructn2v.core.errors import InputError
from napari_autostructn2v.core.folders import find_tiffs, open_planes
from napari_autostructn2v.core.images import MappedPlane
from napari_autostructn2v.core.inference import denoise
from conftest import make_tiny_config


@pytest.fixture
def tree(tmp_path):
    """data/a.tif, data/sub/b.tif (a big-endian stack of 2), data/sub/c.tif (compressed), and files to skip."""
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    a = make_sample((96, 96), seed=0)[1]
    b = make_sample((80, 112), seed=1)[1]
    tifffile.imwrite(data / "a.tif", a)
    tifffile.imwrite(data / "sub" / "b.tif", np.stack([b, 2 * b]), byteorder=">")
    tifffile.imwrite(data / "sub" / "c.tiff", a[::-1], compression="zlib")
    tifffile.imwrite(data / ".a.partial.tif", a)  # hidden: skipped
    (data / "notes.txt").write_text("not an image")
    return data, {"a": a, "b": np.stack([b, 2 * b]), "c": a[::-1]}


def test_folders_are_searched_recursively_and_patterns_keep_their_subfolders(tree, monkeypatch):
    data, _ = tree
    found = find_tiffs([str(data)])
    assert [item.relative for item in found] == [Path("a.tif"), Path("sub/b.tif"), Path("sub/c.tiff")]
    assert all(item.in_folder for item in found)
    monkeypatch.chdir(data.parent)
    assert [item.relative for item in find_tiffs(["data/**/*.tif"])] == [Path("a.tif"), Path("sub/b.tif")]
    assert [item.relative for item in find_tiffs(["data/sub/*"])] == [Path("b.tif"), Path("c.tiff")]
    single = find_tiffs([str(data / "a.tif")])
    assert single[0].relative == Path("a.tif") and not single[0].in_folder
    (data / "empty").mkdir()
    with pytest.raises(InputError, match="without TIFF files"):
        find_tiffs([str(data / "empty")])
    with pytest.raises(InputError, match="matches the pattern"):
        find_tiffs(["data/*.png"])


def test_uncompressed_files_are_mapped_and_read_back_exactly(tree):
    data, images = tree
    planes, mapped = open_planes(data / "sub" / "b.tif")
    assert mapped and len(planes) == 2 and all(isinstance(p, MappedPlane) for p in planes)
    assert planes[1].shape == (80, 112) and planes[1].dtype == np.float32  # native order, from a big-endian file
    np.testing.assert_array_equal(np.asarray(planes[1]), images["b"][1])
    np.testing.assert_array_equal(planes[0][10:20, 5:40], images["b"][0, 10:20, 5:40])
    compressed, mapped = open_planes(data / "sub" / "c.tiff")
    assert not mapped and isinstance(compressed[0], np.ndarray)
    np.testing.assert_array_equal(compressed[0], images["c"])
    tifffile.imwrite(data / "rgb.tif", np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(InputError, match="RGB"):
        open_planes(data / "rgb.tif")


def _mapped_files() -> set[str]:
    return {line.split()[-1] for line in Path("/proc/self/maps").read_text().splitlines() if len(line.split()) > 5}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc to list memory maps")
def test_nothing_stays_mapped_between_reads(tree):
    data, _ = tree
    planes, _ = open_planes(data / "a.tif")
    np.asarray(planes[0])
    planes[0][:8, :8]
    assert str(data / "a.tif") not in _mapped_files()


def test_training_on_mapped_planes_equals_training_on_arrays(tree):
    data, images = tree
    planes = [plane for name in ("a.tif", "sub/b.tif") for plane in open_planes(data / name)[0]]
    from_files = fit(planes, make_tiny_config())
    from_arrays = fit([images["a"], images["b"]], make_tiny_config())
    assert from_files.normalisation == from_arrays.normalisation
    np.testing.assert_array_equal(denoise(from_files, images["a"]), denoise(from_arrays, images["a"]))


def test_training_from_a_folder_holds_much_less_than_the_folder(tmp_path):
    """50 files: the pixels allocated at any time during training stay far below the folder's size."""
    folder = tmp_path / "many"
    folder.mkdir()
    clean, noisy = make_sample((192, 192), seed=0)
    for index in range(50):
        tifffile.imwrite(folder / f"{index:02d}.tif", np.roll(noisy, 3 * index, axis=1))
    size = sum(path.stat().st_size for path in folder.iterdir())
    planes = [plane for path in sorted(folder.iterdir()) for plane in open_planes(path)[0]]
    tracemalloc.start()
    fit(planes, make_tiny_config())
    _, lazy_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert lazy_peak < 0.5 * size, (lazy_peak, size)  # per-slice work (ROI map, mask tiles) dominates
    tracemalloc.start()  # the same training on arrays read whole holds the folder: the measure sees the difference
    fit([tifffile.imread(path) for path in sorted(folder.iterdir())], make_tiny_config())
    _, eager_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert eager_peak > size


def test_cli_trains_on_a_folder_and_denoises_it_into_a_mirrored_tree(tree, tmp_path, capsys):
    data, images = tree
    config = tmp_path / "tiny.json"
    make_tiny_config().to_json(config)
    model_path = tmp_path / "model.pt"
    assert main(["train", str(data), "-o", str(model_path), "--config", str(config)]) == 0
    err = capsys.readouterr().err
    assert "1 of 3 files are compressed or tiled and cannot be memory-mapped" in err and "c.tiff" in err
    out = tmp_path / "out"
    assert main(["-q", "denoise", str(data), "-m", str(model_path), "-o", str(out)]) == 0
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*.tif"))
    assert written == ["a_denoised.tif", "sub/b_denoised.tif", "sub/c_denoised.tif"]
    from napari_autostructn2v import load_model

    model = load_model(model_path)
    np.testing.assert_allclose(tifffile.imread(out / "sub" / "b_denoised.tif"), denoise(model, images["b"]), atol=1e-5)
    assert main(["-q", "denoise", str(data), "-m", str(model_path), "-o", str(out)]) == 2  # exists: refused
    assert "add --overwrite" in capsys.readouterr().err


def test_cli_refuses_an_output_folder_inside_the_input_folder(tree, tmp_path, capsys):
    data, images = tree
    model_path = save_model(fit(images["a"], make_tiny_config()), tmp_path / "m.pt")
    assert main(["denoise", str(data), "-m", str(model_path), "-o", str(data / "denoised")]) == 2
    assert "inside the input folder" in capsys.readouterr().err
    assert not (data / "denoised").exists()
