"""The napari manifest: discovered by npe2, valid, and its contributions work in a viewer."""

import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import npe2

from napari_autostructn2v.widgets.roi import RoiWidget

PLUGIN = "napari-autostructn2v"


def test_manifest_is_discovered_and_lists_the_contributions():
    pm = npe2.PluginManager()
    pm.discover()
    manifest = pm.get_manifest(PLUGIN)
    assert manifest.display_name == "autoStructN2V"
    assert all(command.id.startswith(f"{PLUGIN}.") for command in manifest.contributions.commands)
    widgets = [w.display_name for w in pm.iter_widgets() if w.plugin_name == PLUGIN]
    assert widgets == ["ROI selection", "Train", "Denoise"]
    samples = dict(pm.iter_sample_data())[PLUGIN]
    assert [s.key for s in samples] == ["structured_noise", "structured_noise_volume"]
    manifest.validate_imports()


def test_npe2_validate_passes():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_built_wheel_carries_the_manifest_and_its_entry_point(tmp_path):
    """What napari hub users install: the wheel must hold the top-level napari.yaml and point napari to it."""
    root = Path(__file__).resolve().parents[1]
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(root)],
        check=True, capture_output=True,
    )
    (wheel,) = tmp_path.glob("napari_autostructn2v-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
        shipped = archive.read("napari_autostructn2v/napari.yaml")
    assert shipped == (root / "napari.yaml").read_bytes()
    assert "[napari.manifest]" in entry_points and "napari_autostructn2v:napari.yaml" in entry_points
    assert "Classifier: Framework :: napari" in metadata

    # installed from the wheel alone, npe2 finds the manifest through the entry point
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    probe = (
        "import npe2, napari_autostructn2v\n"
        "manifest = npe2.PluginManifest.from_distribution('napari-autostructn2v')\n"
        "print(manifest.name, len(manifest.contributions.widgets), napari_autostructn2v.__file__)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(site)}, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    name, widgets, module_file = result.stdout.split()
    assert (name, widgets) == (PLUGIN, "3")
    assert Path(module_file).is_relative_to(site)


def test_one_manifest_at_the_top_of_the_repository():
    """The design card's layout: napari.yaml next to pyproject.toml; the package's copy is a link to it."""
    root = Path(__file__).resolve().parents[1]
    packaged = root / "src" / "napari_autostructn2v" / "napari.yaml"
    assert (root / "napari.yaml").is_file() and not (root / "napari.yaml").is_symlink()
    assert packaged.is_symlink() and packaged.resolve() == (root / "napari.yaml").resolve()


def test_plugins_menu_widget_and_sample_open_in_a_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    layers = viewer.open_sample(PLUGIN, "structured_noise")
    assert [layer.name for layer in layers] == ["structured noise sample", "structured noise sample (clean reference)"]
    noisy, clean = layers
    assert noisy.data.shape == (512, 512) and noisy.data.dtype == np.float32
    assert noisy.visible and not clean.visible
    assert np.abs(noisy.data - clean.data).std() > 0.05

    volume, volume_clean = viewer.open_sample(PLUGIN, "structured_noise_volume")
    assert volume.data.shape == volume_clean.data.shape == (32, 256, 256)
    assert tuple(volume.axis_labels) == ("z", "y", "x") and not volume_clean.visible
    viewer.layers.selection.active = noisy

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "ROI selection")
    assert isinstance(widget, RoiWidget)
    assert widget.image.value is noisy
    overlay = viewer.layers["ROI patches stage 1"]
    assert len(overlay.data) > 0
    # the widget sees the viewer through napari's plugin proxy: adding its layer quietly and hiding the
    # outline's text take no private access that napari warns about
    assert not [warning for warning in caught if "Private attribute access" in str(warning.message)]
    assert viewer.layers.selection.active is noisy
    assert not viewer.window._qt_viewer.canvas.layer_to_visual[overlay].node.text.visible
