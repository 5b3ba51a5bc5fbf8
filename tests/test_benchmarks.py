"""Smoke tests of the benchmark suites: tiny sizes, seconds; the real runs stay out of the tests."""

import numpy as np
import pytest

from benchmarks import quality, speed  # the repository root is on pytest's pythonpath (pyproject.toml)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_true_support_matches_the_kernels():
    horizontal = quality.true_support(quality.Noise("horizontal"))
    assert horizontal.shape == (5, 5) and horizontal.sum() == 5 and horizontal[2].all()
    assert quality.true_support(quality.Noise("vertical")).T.tolist() == horizontal.tolist()
    assert quality.true_support(quality.Noise("white")).tolist() == [[True]]
    diagonal = quality.true_support(quality.Noise("diagonal"))
    assert diagonal.sum() == 5 and np.diag(diagonal).all()
    rows = quality.true_support(quality.Noise("row_offsets"))
    assert rows.shape[0] == 2 * quality.ORACLE_RADIUS + 1 and rows[quality.ORACLE_RADIUS].all()


def test_mask_metrics():
    line5 = quality.preset_mask("horizontal", 5)
    line3 = quality.preset_mask("horizontal", 3)
    assert quality.mask_metrics(line5, line5) == {"iou": 1.0, "under": 0, "over": 0}
    metrics = quality.mask_metrics(line3, line5)
    assert metrics["under"] == 2 and metrics["over"] == 0 and metrics["iou"] == pytest.approx(3 / 5)


def test_noise_psd_has_the_noise_power():
    shape = (32, 48)
    for kind in ("white", "horizontal", "row_offsets"):
        psd = quality.noise_psd(quality.Noise(kind), 0.1, shape)
        # mean PSD / (H * W) is the per-pixel variance
        assert psd.mean() / (shape[0] * shape[1]) == pytest.approx(0.01, rel=1e-6)


def test_quality_case_table(tmp_path):
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    methods = ["noisy", "N2V", "structN2V true mask", "ours", "ours, true mask", "supervised"]
    rows = quality.run_case(quality.Noise("horizontal"), 0.1, 0, methods, budget, shape=(128, 128))
    assert [r["method"] for r in rows] == methods
    for row in rows:
        assert np.isfinite(row["psnr"]) and -1 <= row["ssim"] <= 1
    by_method = {r["method"]: r for r in rows}
    assert 19 < by_method["noisy"]["psnr"] < 21  # sigma 0.1 on a [0, 1] image is 20 dB
    assert by_method["ours"]["iou"] == 1.0  # the 1x5 support of [1, 1, 1] noise is found
    assert by_method["ours, true mask"].get("reused") == "ours"
    survey = quality.mask_survey([quality.Noise("horizontal")], [0.1], [0], shape=(128, 128))
    out = quality.tables(rows, survey)
    assert {"psnr", "ssim", "masks", "times", "targets", "mask_survey"} <= set(out)
    header = out["psnr"].splitlines()[0]
    assert all(m in header for m in methods)
    assert len(out["psnr"].splitlines()) == 3  # header, rule, one noise row
    assert quality.write_json("quality_smoke", {"rows": rows}, tmp_path).is_file()


def test_quality_bm3d_beats_noisy_or_is_left_out():
    """BM3D is optional: without it the suite leaves its row out instead of failing."""
    noise = quality.Noise("horizontal")
    clean, noisy = quality.make_case(noise, 0.1, 0, (64, 64))
    row = quality.run_method("BM3D (true PSD)", clean, noisy, noise, 0.1, 0, quality.Budget(steps=40))
    if not quality.bm3d_available():
        assert row is None
        return
    noisy_row = quality.run_method("noisy", clean, noisy, noise, 0.1, 0, quality.Budget(steps=40))
    assert row["psnr"] > noisy_row["psnr"]


def test_seed_roi_algorithm_and_core_agree_on_polarity():
    """Background means dark in both the seed's algorithm and the core, and both pick the same windows."""
    from napari_autostructn2v import select_roi_patches

    image = speed.speed_image(256)
    enhanced = speed.seed_preprocess(image)
    assert enhanced.shape == (64, 64) and 0 <= enhanced.min() <= enhanced.max() <= 1
    # the seed's sigma of 300 flattens the map; a small sigma keeps the structure to compare with. Its CLAHE
    # map is skewed, so split its windows at their median mean: half background, half structure.
    enhanced = speed.seed_preprocess(image, sigma=2)
    every_window = speed.seed_windows(enhanced, 64, 2.0, select_background=True)
    threshold = float(np.median([enhanced[y // 4 : y // 4 + 16, x // 4 : x // 4 + 16].mean() for y, x in every_window]))
    seed = {side: set(speed.seed_windows(enhanced, 64, threshold, select_background=side)) for side in (True, False)}
    core = {side: {(int(y), int(x)) for y, x in select_roi_patches(image, 64, 0.5, select_background=side)}
            for side in (True, False)}

    def brightness(corners) -> float:
        return float(np.mean([image[y : y + 64, x : x + 64].mean() for y, x in corners]))

    for found in (seed, core):
        assert found[True] and found[False]
        assert brightness(found[True]) < brightness(found[False])  # background = the darker windows
    # the same windows on each side: the core's background overlaps the seed's background, not its structure
    assert len(core[True] & seed[True]) > 2 * len(core[True] & seed[False])
    assert len(core[False] & seed[False]) > 2 * len(core[False] & seed[True])


def test_speed_tables(tmp_path):
    results = speed.run(roi_sizes=[256], inference_sizes=[128], memory_size=0, train_steps=5, threads=1,
                        compare_threads=False, top_level_widths=(4,))
    assert results["roi"][0]["core_first_s"] > 0 and results["roi"][0]["first_ratio"] > 0
    assert all(r["ms_per_batch"] > 0 for r in results["masking"])
    assert all(r["patches_per_s"] > 0 for r in results["training"])
    assert results["inference"][0]["mpix_per_s"] > 0
    out = speed.tables(results)
    assert {"roi", "masking", "training", "inference", "memory", "careamics", "top_level"} <= set(out)
    assert [r["batch_norm"] for r in results["top_level"]] == [False, True]  # the default network first
    assert all(r["full_ms"] > 0 and r["sparse_ms"] > 0 for r in results["top_level"])
    assert "| 4 | no |" in out["top_level"] and "| 4 | yes |" in out["top_level"]
    assert out["roi"].startswith("| image |")
    assert speed.write_json("speed_smoke", results, tmp_path).is_file()



def test_preview_benchmark_switches_the_budget_off_and_restores_it(monkeypatch):
    from napari_autostructn2v.core import training
    from napari_autostructn2v.core.training import Preview

    shares = []

    def recording_train(noisy, config, preview_every):
        shares.append(training.PREVIEW_SHARE)
        yield Preview(2, preview_every, np.zeros((4, 4), np.float32))

    monkeypatch.setattr(speed, "train", recording_train)
    original = training.PREVIEW_SHARE
    rows = speed.bench_previews(size=64)
    assert shares == [original, float("inf")] and training.PREVIEW_SHARE == original
    assert [row["shown"] for row in rows] == [1, 1] and rows[0]["due"] == 10
    table = speed.comparison_tables({"careamics": {"status": "not run"}, "previews": rows})["previews"]
    assert "within the budget (now)" in table and "every due preview (before)" in table

def test_peak_memory_subprocess():
    row = speed.bench_peak_memory(256)
    assert row["peak_mib"] > row["image_mib"] > 0 and row["seconds"] > 0


def _fake_side_by_side(monkeypatch, native: bool) -> list[str]:
    """Ours and CAREamics replaced by stand-ins that log their turns and report set times."""
    from benchmarks.peers import careamics_client

    order = []

    def fake_ours(*args, mixed_precision, **kwargs):
        order.append("ours bf16" if mixed_precision and native else "ours fp32")
        return {"train_seconds": 2.0, "train_cpu_seconds": 1.0, "predict_seconds": 1.0, "predict_cpu_seconds": 0.5}

    def fake_jobs(python, jobs, work_dir, timeout=None):
        (image, settings), = jobs
        order.append(f"careamics {settings['precision']}")
        assert settings["num_channels_init"] == 8 and settings["steps"] == 4 and settings["threads"] == 1
        result = {"train_seconds": 4.0 + len(order), "train_cpu_seconds": 3.0, "predict_input_seconds": 2.0,
                  "predict_input_cpu_seconds": 2.0}
        return [careamics_client.JobResult(image, result)], 0.0

    monkeypatch.setattr(speed, "native_bfloat16", lambda device: native)
    monkeypatch.setattr(speed, "ours_side_by_side", fake_ours)
    monkeypatch.setattr(careamics_client, "run_jobs", fake_jobs)
    return order


def test_side_by_side_alternates_and_reports_medians(monkeypatch, tmp_path):
    order = _fake_side_by_side(monkeypatch, native=False)
    side = speed.bench_side_by_side("python", width=8, steps=4, steps_per_epoch=2, train_size=64, predict_size=64,
                                    repeats=3, work_dir=tmp_path)
    assert order == ["ours fp32", "careamics 32-true", "careamics 32-true", "ours fp32", "ours fp32",
                     "careamics 32-true"]
    assert side["rows"]["CAREamics (float32, its default)"]["train_seconds"] == 7.0  # median of 6, 7 and 10
    ratio = side["ratio"]["each at its default"]
    assert ratio["steps_per_s"] == 3.5 and ratio["steps_per_cpu_s"] == 3.0
    assert ratio["mpix_per_s"] == 2.0 and ratio["mpix_per_cpu_s"] == 4.0
    assert list(side["ratio"]) == ["each at its default"]  # both in float32: the same pair
    assert "| this project (float32, its default) |" in speed.side_by_side_table(side)


def test_side_by_side_compares_each_precision_where_the_cpu_has_bfloat16(monkeypatch, tmp_path):
    order = _fake_side_by_side(monkeypatch, native=True)
    side = speed.bench_side_by_side("python", width=8, steps=4, steps_per_epoch=2, train_size=64, predict_size=64,
                                    repeats=2, work_dir=tmp_path, careamics_precisions=("32-true", "bf16-mixed"))
    assert order == ["ours bf16", "ours fp32", "careamics 32-true", "careamics bf16-mixed",  # then rotated by one
                     "ours fp32", "careamics 32-true", "careamics bf16-mixed", "ours bf16"]
    assert list(side["ratio"]) == ["each at its default", "both in bfloat16", "both in float32"]
    table = speed.side_by_side_table(side)
    assert "| this project (bfloat16, its default) |" in table and "| CAREamics (bfloat16) |" in table
    only_bf16 = speed.bench_side_by_side("python", width=8, steps=4, steps_per_epoch=2, train_size=64,
                                         predict_size=64, repeats=1, work_dir=tmp_path,
                                         careamics_precisions=("bf16-mixed",))
    assert list(only_bf16["ratio"]) == ["both in bfloat16"]  # CAREamics' default was not measured


def test_ours_side_by_side_trains_the_budget_and_denoises():
    result = speed.ours_side_by_side(speed.speed_image(64), speed.speed_image(96), width=4, depth=1, patch=32,
                                     batch=2, steps=2, steps_per_epoch=1)
    assert all(value > 0 for value in result.values())


def test_gui_stall_summary_keeps_the_button_handler_apart_and_says_where_the_longest_stall_was():
    from benchmarks.gui import StallProbe

    probe = StallProbe()
    probe.ticks = [0.0, 1.0, 1.01, 1.52, 1.53]  # the handler's gap (1 s), a 0.5 s stall two ticks later
    probe.samples = [(1, "in the handler"), (3, "painting"), (3, "painting"), (3, "elsewhere")]
    summary = probe.summary()
    assert summary["max"] == pytest.approx(990) and summary["max_after_press"] == pytest.approx(500)
    assert summary["worst_where"] == "painting" and summary["over_100ms"] == 2
