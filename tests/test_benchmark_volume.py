"""Smoke test of the volume benchmark (3D against 2D network): a tiny volume, a few steps."""

import json

import pytest

from benchmarks import volume

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_volume_benchmark_prints_both_networks_and_writes_the_runs(tmp_path, capsys):
    assert volume.main(["--shape", "8", "48", "48", "--steps", "10", "--seeds", "1", "--patch-size", "32",
                        "--patch-depth", "8", "--batch-2d", "4", "--batch-3d", "1", "--output", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    for row in ("noisy input", "2d network", "3d network", "3d - 2d (per seed)"):
        assert f"| {row} |" in table
    runs = json.loads((tmp_path / "volume.json").read_text())["runs"]
    assert [run["network"] for run in runs] == ["2d", "3d"]
    assert all(run["steps"] == 10 and run["psnr"] > 0 and 0 < run["ssim"] <= 1 for run in runs)


def test_volume_benchmark_runs_one_network_on_request(tmp_path, capsys):
    assert volume.main(["--shape", "8", "48", "48", "--steps", "4", "--seeds", "1", "--patch-size", "32",
                        "--batch-2d", "4", "--networks", "2d", "--output", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| 2d network |" in table and "| 3d network |" not in table and "3d - 2d" not in table
    assert [run["network"] for run in json.loads((tmp_path / "volume.json").read_text())["runs"]] == ["2d"]
