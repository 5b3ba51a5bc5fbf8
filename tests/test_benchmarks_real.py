"""The real-image suite (python -m benchmarks.quality --suite real): metrics, CAREamics protocol, smoke run.

CAREamics is never needed here: the runner protocol is exercised with a stand-in runner script that
copies its input, and the suite's smoke run has no CAREamics interpreter.
"""

import json
import sys
import textwrap

import numpy as np
import pytest
import torch

from benchmarks import quality, quality_real, real_set
from benchmarks.peers import careamics_client, careamics_runner


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def no_careamics(monkeypatch, tmp_path):
    """No default venv and no CAREAMICS_PYTHON, as on CI."""
    monkeypatch.setattr(careamics_client, "DEFAULT_VENV", tmp_path / "no-venv")
    monkeypatch.delenv("CAREAMICS_PYTHON", raising=False)


def _reference(seed=0):
    return real_set.clean_image("sparse", seed, shape=(64, 64))


# ----------------------------------------------------------------------------- metrics

def test_linear_fit_recovers_a_gain_and_offset():
    reference = _reference()
    a, b = quality_real.linear_fit(0.5 * reference + 0.2, reference)
    assert a == pytest.approx(2.0, rel=1e-5) and b == pytest.approx(-0.4, abs=1e-5)


def test_metrics_of_a_dimmed_output():
    rng = np.random.default_rng(0)
    reference = _reference()
    dimmed = (0.8 * reference + 0.01 * rng.standard_normal(reference.shape)).astype(np.float32)
    metrics = quality_real.quality_metrics(dimmed, reference)
    assert metrics["psnr_fit"] > metrics["psnr"] + 5  # the gain error is most of the error
    bright = reference >= np.quantile(reference, 0.95)
    assert metrics["bias"] == pytest.approx(-0.2 * reference[bright].mean(), abs=0.01)
    assert metrics["bias"] < -0.05 and metrics["fit_a"] == pytest.approx(1.25, rel=0.02)
    assert quality_real.quality_metrics(reference + 0.05, reference)["bias"] == pytest.approx(0.05, abs=1e-6)


def test_linear_fit_psnr_is_never_below_the_raw_psnr():
    rng = np.random.default_rng(1)
    reference = _reference(1)
    for output in (reference + 0.1 * rng.standard_normal(reference.shape), 1.2 * reference - 0.1,
                   np.clip(reference + 0.05, 0, 1)):
        metrics = quality_real.quality_metrics(output.astype(np.float32), reference)
        assert metrics["psnr_fit"] >= metrics["psnr"] - 1e-6
        assert -1 <= metrics["ssim"] <= 1


def test_bias_looks_only_at_the_brightest_pixels():
    reference = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    output = reference.copy()
    output[reference < np.quantile(reference, 0.5)] -= 0.3  # the dark half is changed, not the bright 5 %
    assert quality_real.bright_bias(output, reference) == 0.0
    assert quality_real.bright_bias(output, reference, fraction=0.6) < 0


# ----------------------------------------------------------------------------- the CAREamics mask a user picks

@pytest.mark.parametrize("family, axis, best", [
    ("box3_h", "horizontal", 5), ("box5_h", "horizontal", 9), ("box7_h", "horizontal", 13),
    ("box5_v", "vertical", 9), ("gauss1_h", "horizontal", 11), ("gauss2_h", "horizontal", 15),
    ("pmt1", "horizontal", 13), ("pmt2", "horizontal", 15), ("banding", "horizontal", 15),
    ("white", None, None), ("poisson", None, None), ("diagonal", None, None), ("aniso", None, None),
])
def test_careamics_preset_and_best_span(family, axis, best):
    noise = real_set.Noise(family, 0.1)
    assert quality_real.careamics_preset(family) == axis
    jobs = quality_real.careamics_jobs(quality_real.CAREAMICS_METHODS, noise, quality.Budget(), 0, 1)
    assert jobs["CAREamics N2V"]["struct_axis"] == "none"
    if axis is None:
        assert set(jobs) == {"CAREamics N2V"}
        return
    assert jobs["CAREamics structN2V 5"]["struct_axis"] == axis and jobs["CAREamics structN2V 5"]["struct_span"] == 5
    assert jobs["CAREamics structN2V best"]["struct_span"] == best
    # the best span covers the true support along the line (a box of 5 correlates over 9 pixels),
    # unless CAREamics' cap (15) cuts it
    support = quality_real.true_mask(noise)
    along = support.any(axis=0) if axis == "horizontal" else support.any(axis=1)
    assert best == min(int(along.sum()), careamics_client.MAX_SPAN)


def test_runner_settings_match_our_config_and_reject_bad_spans():
    settings = quality_real.careamics_jobs(["CAREamics N2V"], real_set.Noise("white", 0.1),
                                           quality.Budget(steps=40, steps_per_epoch=10, batch_size=8, patch_size=32),
                                           seed=3, threads=1)["CAREamics N2V"]
    defaults = quality_real.Config()
    assert settings["steps"] == 40 and settings["batch_size"] == 8 and settings["patch_size"] == 32
    assert settings["steps_per_epoch"] == 10
    assert settings["num_channels_init"] == defaults.base_channels and settings["depth"] == defaults.depth
    assert settings["seed"] == 4  # CAREamics wants a positive seed
    with pytest.raises(ValueError):
        careamics_client.runner_settings(steps=1, patch_size=32, batch_size=1, depth=2, base_channels=16,
                                         axis="horizontal", span=17)
    with pytest.raises(ValueError):
        careamics_client.runner_settings(steps=1, patch_size=32, batch_size=1, depth=2, base_channels=16,
                                         axis="diagonal")


def test_find_python_order(monkeypatch, tmp_path):
    monkeypatch.setattr(careamics_client, "DEFAULT_VENV", tmp_path / "venv")
    assert careamics_client.find_python(None, environ={}) is None
    assert careamics_client.find_python(None, environ={"CAREAMICS_PYTHON": "/x/python"}).as_posix() == "/x/python"
    default = tmp_path / "venv" / "bin" / "python"
    default.parent.mkdir(parents=True)
    default.touch()
    assert careamics_client.find_python(None, environ={"CAREAMICS_PYTHON": "/x/python"}) == default
    assert careamics_client.find_python("/y/python", environ={}).as_posix() == "/y/python"


# ----------------------------------------------------------------------------- the runner protocol

def test_check_result_names_what_did_not_match():
    settings = careamics_client.runner_settings(steps=200, patch_size=64, batch_size=16, depth=2, base_channels=16)
    good = {"trainer_steps": 200, "logged_steps": 200, "batches_per_epoch": 1,
            "used": {"batch_size": 16, "depth": 2, "num_channels_init": 16, "patch_size": [64, 64],
                     "train_patches_per_epoch": 16}}
    assert careamics_client.check_result(good, settings) == []
    bad = {**good, "trainer_steps": 100, "used": {**good["used"], "train_patches_per_epoch": 8, "depth": 3}}
    notes = " ".join(careamics_client.check_result(bad, settings))
    assert "100 steps" in notes and "depth 3" in notes and "only 8 training patches" in notes
    with_epochs = {**settings, "steps_per_epoch": 20}
    assert careamics_client.check_result(good, with_epochs) == ["1 batches per epoch, not 20"]
    assert careamics_client.check_result({**good, "batches_per_epoch": 20}, with_epochs) == []
    in_bf16 = {**settings, "precision": "bf16-mixed"}
    assert careamics_client.check_result({**good, "precision": "32-true"}, in_bf16) == [
        "Lightning precision 32-true, not bf16-mixed"]
    assert careamics_client.check_result({**good, "precision": "bf16-mixed"}, in_bf16) == []


def test_epoch_copies_give_epochs_of_the_suite_length():
    settings = {"patch_size": 64, "batch_size": 16, "steps_per_epoch": 20}
    assert careamics_runner.epoch_copies((256, 256), settings) == 20  # 16 patches per copy, one batch
    assert careamics_runner.epoch_copies((256, 256), {**settings, "batch_size": 8}) == 10
    assert careamics_runner.epoch_copies((256, 256), {**settings, "patch_size": 32, "batch_size": 2,
                                                      "steps_per_epoch": 2}) == 1
    assert careamics_runner.epoch_copies((256, 256), {**settings, "steps_per_epoch": None}) == 1


def test_logged_steps_reads_the_csv_log(tmp_path):
    folder = tmp_path / "csv_logs" / "benchmark" / "version_0"
    folder.mkdir(parents=True)
    (folder / "metrics.csv").write_text("epoch,step,train_loss,val_loss\n0,0,1.0,\n0,0,,0.9\n5,5,0.8,\n5,5,,0.7\n")
    assert careamics_runner.logged_steps(tmp_path) == 6
    assert careamics_runner.logged_steps(tmp_path / "empty") is None


STAND_IN = """
    import json, sys
    import numpy as np
    for job in json.load(open(sys.argv[1])):
        s = job["settings"]
        np.save(job["output"], np.load(job["input"]) * {gain})
        used = {{"batch_size": s["batch_size"], "depth": s["depth"], "num_channels_init": s["num_channels_init"],
                "patch_size": [s["patch_size"]] * 2, "train_patches_per_epoch": 16}}
        json.dump({{"seconds": 0.5, "trainer_steps": s["steps"] - {missing}, "logged_steps": s["steps"], "epochs": s["steps"],
                   "batches_per_epoch": s["steps_per_epoch"] or 1, "final_learning_rate": 1e-3, "used": used, "axis": s["struct_axis"]}},
                  open(job["result"], "w"))
"""


def _stand_in(monkeypatch, tmp_path, gain=1.0, missing=0, fail=False):
    script = tmp_path / "stand_in_runner.py"
    body = "import sys; sys.exit(3)" if fail else textwrap.dedent(STAND_IN.format(gain=gain, missing=missing))
    script.write_text(body)
    monkeypatch.setattr(careamics_client, "RUNNER", script)


def test_run_jobs_round_trip(monkeypatch, tmp_path):
    _stand_in(monkeypatch, tmp_path, gain=0.5, missing=1)
    noisy = np.arange(16, dtype=np.float32).reshape(4, 4)
    settings = careamics_client.runner_settings(steps=20, patch_size=32, batch_size=4, depth=2, base_channels=16)
    results, overhead = careamics_client.run_jobs(sys.executable, [(noisy, settings), (noisy + 1, settings)],
                                                  tmp_path / "work")
    assert len(results) == 2 and overhead >= 0
    np.testing.assert_allclose(results[1].output, (noisy + 1) * 0.5)
    assert results[0].result["trainer_steps"] == 19 and "19 steps, not 20" in results[0].notes[0]


def test_run_jobs_reports_a_failing_runner(monkeypatch, tmp_path):
    _stand_in(monkeypatch, tmp_path, fail=True)
    settings = careamics_client.runner_settings(steps=2, patch_size=32, batch_size=4, depth=2, base_channels=16)
    with pytest.raises(careamics_client.CareamicsError, match="exited with 3"):
        careamics_client.run_jobs(sys.executable, [(np.zeros((4, 4), np.float32), settings)], tmp_path / "work")


def test_case_with_stand_in_careamics(monkeypatch, tmp_path):
    """CAREamics rows: measured where a preset exists, n/a (with the reason) where none does, and the
    best-span run reused when the best span is 5 (box-3 noise correlates over 5 pixels)."""
    _stand_in(monkeypatch, tmp_path)
    methods = ["noisy"] + quality_real.CAREAMICS_METHODS
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    box = {r["method"]: r for r in quality_real.run_case("sparse", real_set.Noise("box3_h", 0.1), 0, methods, budget,
                                                         sys.executable, work_dir=tmp_path)}
    assert box["CAREamics structN2V 5"]["axis"] == "horizontal" and box["CAREamics structN2V 5"]["span"] == 5
    assert box["CAREamics structN2V best"]["reused"] == "CAREamics structN2V 5"
    assert box["CAREamics N2V"]["psnr"] == pytest.approx(box["noisy"]["psnr"])  # the stand-in returns its input
    diagonal = {r["method"]: r for r in quality_real.run_case("sparse", real_set.Noise("diagonal", 0.1), 0, methods,
                                                              budget, sys.executable, work_dir=tmp_path)}
    assert diagonal["CAREamics structN2V 5"]["na"] == "no preset" and "psnr" not in diagonal["CAREamics structN2V 5"]
    out = quality_real.tables(list(box.values()) + list(diagonal.values()))
    assert "n/a (no preset)" in out["psnr:sparse"]
    assert "horizontal 5" in out["careamics"] and "4 (log 4)" in out["careamics"]


@pytest.fixture
def trained_configs(monkeypatch) -> list:
    """The configurations the suite trains ours with, in order (training itself runs as usual)."""
    configs = []

    def recorded(noisy, config, struct_mask):
        configs.append(config)
        return quality.train_model(noisy, config, struct_mask)

    monkeypatch.setattr(quality_real, "train_model", recorded)
    return configs


def test_ours_in_float32_is_run_on_request_only(no_careamics, trained_configs):
    """'ours, float32' trains with Config.mixed_precision off; the default methods leave it out."""
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    rows = quality_real.run_case("sparse", real_set.Noise("box5_h", 0.1), 0, ["noisy", "ours", "ours, float32"],
                                 budget, None)
    assert [r["method"] for r in rows] == ["noisy", "ours", "ours, float32"] and "psnr" in rows[-1]
    assert [c.mixed_precision for c in trained_configs] == [True, False]
    assert "ours, float32" not in quality_real.ALL_METHODS
    assert quality_real.parse_args(["--methods", "ours", "ours, float32"]).methods == ["ours", "ours, float32"]


def test_no_batch_norm_and_supervised_run_on_request(no_careamics, trained_configs, monkeypatch):
    """'ours, no batch norm' trains with Config.batch_norm off; 'supervised' trains on the clean reference."""
    supervised = []

    def recorded_supervised(noisy, clean, budget, seed):
        supervised.append(clean)
        return quality.train_supervised(noisy, clean, budget, seed)

    monkeypatch.setattr(quality_real, "train_supervised", recorded_supervised)
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    methods = ["noisy", "ours, no batch norm", "supervised"]
    rows = quality_real.run_case("sparse", real_set.Noise("box5_h", 0.1), 0, methods, budget, None)
    assert [r["method"] for r in rows] == methods and all("psnr" in r for r in rows)
    [config] = trained_configs
    assert config.batch_norm is False and not config.uses_batch_norm
    reference, noisy = real_set.make_case("sparse", real_set.Noise("box5_h", 0.1), 0)
    assert len(supervised) == 1 and np.array_equal(supervised[0], reference)
    assert not set(methods[1:]) & set(quality_real.ALL_METHODS)


def ours_and_ablation(family: str, ablation: str) -> dict:
    """The rows of ours and of one ablation on the sparse frame, with a tiny budget, by method."""
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    rows = quality_real.run_case("sparse", real_set.Noise(family, 0.1), 0, ["ours", ablation], budget, None)
    return {row["method"]: row for row in rows}


def test_whitening_ablation_runs_on_request_and_the_mask_names_the_filter(no_careamics, trained_configs):
    """On PMT noise ours decorrelates (its mask text says so); 'ours, no whitening' masks the line instead."""
    rows = ours_and_ablation("pmt2", "ours, no whitening")
    assert [c.mask.whiten for c in trained_configs] == [True, False]
    assert rows["ours"]["mask_text"].startswith("1 px in 1x1, decorrelated along X (rho 0.")
    assert "decorrelated" not in rows["ours, no whitening"]["mask_text"]
    assert rows["ours, no whitening"]["mask_text"].endswith("in 1x11")
    assert "ours, no whitening" not in quality_real.ALL_METHODS


def test_mask_survey_counts_the_decorrelated_cases():
    from benchmarks import masks

    rows = masks.survey(["sparse"], ["pmt2", "box5_h"], [0.1], [0])
    assert [r["decorrelated"] for r in rows] == [True, False]
    assert rows[0]["mask"] == "11 px 1x11"  # the line it replaces, compared with the true support
    assert "decorrelated instead of masked, pmt (first-order filtered): 1/1" in masks.summary(rows)
    cells = [line.split(" | ") for line in masks.tables(rows).splitlines() if line.startswith("| ")]
    lines = {row[0]: row for row in cells}
    column = lines["| noise"].index("decorrelated")
    assert lines["| pmt2"][column] == "1/1" and lines["| box5_h"][column] == "0/1"
    recorrupted = lines["| noise"].index("recorrupted")
    assert lines["| pmt2"][recorrupted] == "0/1" and lines["| box5_h"][recorrupted] == "1/1"
    assert "recorrupted pairs instead of blind spots, additive families: 1/1" in masks.summary(rows)
    assert "of those recorrupted, covariance measured through texture: 0/1" in masks.summary(rows)  # sparse
    box = next(row for row in rows if row["family"] == "box5_h")
    assert 0.85 < box["variance_found"] < 1.15 and box["covariance_error"] < 0.2
    assert "recorruption covariance against the noise's, sparse (1 cases): variance found / true median" in (
        masks.summary(rows))


def test_blind_spot_ablation_masks_what_ours_recorrupts(no_careamics, trained_configs):
    """On additive box noise ours trains on recorrupted pairs (its mask text says so); 'ours, blind spots' masks."""
    rows = ours_and_ablation("box5_h", "ours, blind spots")
    assert [c.mask.recorrupt for c in trained_configs] == [True, False]
    assert rows["ours"]["mask_text"].endswith("recorrupted pairs (not masked)")
    assert "recorrupted" not in rows["ours, blind spots"]["mask_text"]


def test_stage_ablations_run_on_request(no_careamics, trained_configs):
    """'ours, stage 1 skipped' gives stage 2 all the steps; 'ours, stage 2 from scratch' does not start it from stage 1."""
    budget = quality.Budget(steps=4, steps_per_epoch=2, batch_size=2, patch_size=32)
    methods = ["ours", "ours, stage 1 skipped", "ours, stage 2 from scratch"]
    rows = quality_real.run_case("sparse", real_set.Noise("banding", 0.1), 0, methods, budget, None)
    assert [r["method"] for r in rows] == methods and all("psnr" in r for r in rows)
    ours, skipped, scratch = trained_configs
    assert (skipped.stage1.epochs, skipped.stage2.epochs) == (0, ours.stage1.epochs + ours.stage2.epochs)
    assert ours.stage2_from_stage1 and not scratch.stage2_from_stage1
    assert not set(methods[1:]) & set(quality_real.ALL_METHODS)


def test_first_seed_moves_the_seeds(no_careamics, monkeypatch, tmp_path):
    seeds = []
    monkeypatch.setattr(quality_real, "run_case", lambda image, noise, seed, *args, **kwargs: seeds.append(seed) or [])
    monkeypatch.setattr(quality_real, "tables", lambda rows: {})
    monkeypatch.setattr(quality_real, "render", lambda out: "")
    quality_real.main(["--images", "sparse", "--families", "white", "--seeds", "2", "--first-seed", "3",
                       "--out", str(tmp_path), "--name", "seeds"])
    assert seeds == [3, 4]


# ----------------------------------------------------------------------------- the suite end to end

def test_suite_smoke_without_careamics(no_careamics, tmp_path, capsys, monkeypatch):
    trainings = [0]

    def counted(*args, **kwargs):
        trainings[0] += 1
        return quality.train_model(*args, **kwargs)

    monkeypatch.setattr(quality_real, "train_model", counted)
    payload = quality.main(["--suite", "real", "--images", "sparse", "--families", "box5_h", "--steps", "4",
                            "--steps-per-epoch", "2", "--batch", "2", "--patch", "32", "--out", str(tmp_path),
                            "--name", "real_smoke"])
    printed = capsys.readouterr()
    assert quality_real.NOT_RUN in printed.out and quality_real.NOT_RUN in printed.err
    rows = payload["rows"]
    assert [r["method"] for r in rows] == quality_real.OURS_METHODS  # no CAREamics rows without CAREamics
    for row in rows:
        assert row["psnr_fit"] >= row["psnr"] - 1e-6 and np.isfinite(row["bias"]) and -1 <= row["ssim"] <= 1
    assert 19 < rows[0]["psnr"] < 21  # noisy at sigma 0.1
    header = payload["tables"]["psnr:sparse"].splitlines()[0]
    assert header == "| image | noise | sigma | noisy | N2V | structN2V true mask | ours | ours, direct inference |"
    assert trainings == [1]  # ours and ours, direct inference: one model, predicting two ways
    assert {"psnr:sparse", "psnr_fit:sparse", "bias:sparse", "ssim:sparse", "times", "masks", "targets",
            "target_cases"} <= set(payload["tables"])
    assert "ours >= noisy + 5 dB" in payload["tables"]["targets"]
    assert payload["ours_config"] == quality_real.Config().to_dict()  # the package's defaults, not a copy
    saved = json.loads((tmp_path / "real_smoke.json").read_text())
    assert len(saved["rows"]) == len(rows) and saved["careamics"] == quality_real.NOT_RUN
    merged = quality_real.main(["--merge", str(tmp_path / "real_smoke.json"), "--out", str(tmp_path), "--name", "m"])
    assert merged["tables"]["psnr:sparse"] == payload["tables"]["psnr:sparse"]
    with pytest.raises(SystemExit, match="share runs"):
        quality_real.main(["--merge", str(tmp_path / "real_smoke.json"), str(tmp_path / "real_smoke.json"),
                           "--out", str(tmp_path)])
    twice = quality_real.main(["--merge", str(tmp_path / "real_smoke.json"), str(tmp_path / "real_smoke.json"),
                               "--later-wins", "--out", str(tmp_path), "--name", "m2"])
    assert len(twice["rows"]) == len(rows)


def test_targets_decide_from_the_numbers():
    def row(method, psnr, fit=None, family="pmt2"):
        return {"image": "sparse", "image_class": "sparse", "family": family, "sigma": 0.1, "seed": 0,
                "method": method, "psnr": psnr, "psnr_fit": psnr if fit is None else fit, "ssim": 0.5, "bias": 0.0,
                "seconds": 1.0}

    rows = [row("noisy", 20.0), row("N2V", 24.0), row("structN2V true mask", 28.0), row("ours", 27.8, fit=28.5),
            row("CAREamics structN2V 5", 26.0), row("CAREamics structN2V best", 28.1)]
    checks = {c["target"]: c for c in quality_real.targets(quality_real.aggregate(rows))}
    assert checks["vs noisy"]["holds"] and checks["vs true mask"]["holds"]
    assert not checks["unbiased"]["holds"] and checks["unbiased"]["value"] == pytest.approx(0.7)
    assert not checks["vs CAREamics"]["holds"] and checks["vs CAREamics"]["reference"] == 28.1
    assert checks["beats N2V"]["holds"] and checks["beats N2V"]["gap"] == pytest.approx(0.8)
    white = [row("noisy", 20.0, family="white"), row("N2V", 27.0, family="white"), row("ours", 26.7, family="white")]
    checks = {c["target"]: c for c in quality_real.targets(quality_real.aggregate(white))}
    assert not checks["vs N2V"]["holds"] and "vs noisy" not in checks


def test_training_curve_reports_every_epoch(one_torch_thread):
    """benchmarks.curve on a tiny budget: one row per epoch with the figures it prints."""
    from benchmarks import curve
    from benchmarks.quality import Budget

    rows = curve.run("sparse", "box3_h", "structN2V true mask", Budget(steps=8, steps_per_epoch=2, patch_size=32),
                     seed=0, learning_rate=None, recalibrate_bn=2, blind_from=3, log=lambda line: None)
    assert [row["epoch"] for row in rows] == [0, 1, 2, 3]
    for row in rows:
        assert row["psnr_fit"] >= row["psnr"] - 1e-6 and row["gain"] > 0 and np.isfinite(row["psnr_bn"])
    assert "psnr_blind" not in rows[2] and np.isfinite(rows[3]["psnr_blind"])


def test_blind_output_predicts_every_pixel_from_its_masked_neighbourhood():
    """The blind-spot output of a network that returns its input is the masked input at each pixel:
    no pixel keeps its own value, and each one came from the fill of its own blind spot."""
    from benchmarks import curve
    from napari_autostructn2v import preset_mask
    from napari_autostructn2v.core.images import Normalisation

    class Identity(torch.nn.Module):
        def forward(self, x):
            return x

    noisy = np.arange(40 * 36, dtype=np.float32).reshape(40, 36)  # every value unique
    model = type("Model", (), {"net": Identity(), "normalisation": Normalisation.fit([noisy])})()
    output = curve.blind_output(model, noisy, preset_mask("horizontal", 5))
    assert not np.isclose(output, noisy, atol=1e-3).any()
