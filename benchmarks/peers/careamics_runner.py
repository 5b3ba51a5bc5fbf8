"""Train and apply CAREamics N2V / structN2V on one image; runs inside CAREamics' own environment.

    python careamics_runner.py jobs.json

jobs.json is a list of jobs, each {"input": noisy.npy, "output": out.npy, "result": result.json,
"settings": {...}}; several jobs share one process, so CAREamics is imported once (about 20 s on a
loaded CPU).

This file is executed by the CAREamics interpreter (benchmarks/.venv-careamics), never imported by
the benchmark suite or the package: it needs only numpy, torch and careamics. The settings have
the keys written by `benchmarks.peers.careamics.runner_settings`: steps, patch_size, batch_size, depth,
steps_per_epoch, num_channels_init, struct_axis ("none", "horizontal" or "vertical"), struct_span, seed, threads,
accelerator (Lightning's name for the device ours runs on), work_dir and optionally predict_input (a
second .npy image whose prediction is timed on its own). Each result JSON holds the wall and CPU times (training, prediction), the optimiser steps counted by
the Lightning trainer and by CAREamics' CSV log, the epochs and the configuration actually used.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np


def build_configuration(settings: dict):
    """A CAREamics N2V configuration: the factory's defaults, with the benchmark's budget and width.

    structN2V is configured as `create_structn2v_config` does it (no augmentation, which would turn
    a line mask); N2V keeps the default flips and rotations. Training stops after exactly
    `steps` optimiser steps (Lightning's max_steps; the epoch count is left open).
    """
    from careamics.config import create_advanced_n2v_config

    struct = settings["struct_axis"] != "none"
    return create_advanced_n2v_config(
        experiment_name="benchmark",
        data_type="array",
        axes="YX",
        patch_size=[settings["patch_size"], settings["patch_size"]],
        batch_size=settings["batch_size"],
        num_epochs=None,
        augmentations=[] if struct else None,
        struct_n2v_axes=settings["struct_axis"],
        struct_n2v_span=settings["struct_span"],
        num_workers=0,
        trainer_params={"max_steps": settings["steps"], "max_epochs": -1,
                        "accelerator": settings.get("accelerator", "cpu"), "devices": 1,
                        "precision": settings.get("precision", "32-true")},
        model_params={"depth": settings["depth"], "num_channels_init": settings["num_channels_init"]},
        checkpoint_params={"save_top_k": 0, "save_last": True},
        seed=settings["seed"],
    )


def epoch_copies(shape, settings: dict) -> int:
    """How many copies of the image make an epoch of `steps_per_epoch` batches (1 without that key):
    CAREamics draws (H // patch) * (W // patch) random patches per image and epoch."""
    steps_per_epoch = settings.get("steps_per_epoch")
    if not steps_per_epoch:
        return 1
    per_image = max(1, (shape[-2] // settings["patch_size"]) * (shape[-1] // settings["patch_size"]))
    return max(1, -(-steps_per_epoch * settings["batch_size"] // per_image))


def logged_steps(work_dir: Path) -> int | None:
    """The optimiser steps in CAREamics' CSV log: the largest logged step index plus one."""
    steps = []
    for path in work_dir.glob("csv_logs/**/metrics.csv"):
        with path.open() as handle:
            steps += [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]
    return max(steps) + 1 if steps else None


def run_job(job: dict) -> dict:
    """One training and prediction: `job` has input, output, result (paths) and settings (a dict)."""
    import careamics
    import torch
    from careamics import CAREamist

    settings = job["settings"]
    torch.set_num_threads(int(settings.get("threads", 1)))
    noisy = np.load(job["input"]).astype(np.float32)
    work_dir = Path(settings["work_dir"])
    work_dir.mkdir(parents=True, exist_ok=True)
    config = build_configuration(settings)
    start = time.perf_counter()
    careamist = CAREamist(config, work_dir=work_dir, enable_progress_bar=False)
    # The image itself is the validation data: without it CAREamics sets 8 patches of a 256 x 256 image
    # aside (half of it) and trains on batches of the 8 left, whatever the batch size.
    # An epoch of CAREamics is one pass over the patches it extracts, (256 / 64)**2 = 16 random patches
    # per image: one batch. Its default scheduler (ReduceLROnPlateau, patience 10 epochs, factor 0.1)
    # then cuts the learning rate every few steps (measured: 1e-3 down to 1e-8 within 200 steps). Given
    # as `copies` copies, the image yields epochs of `steps_per_epoch` batches, as ours has.
    copies = epoch_copies(noisy.shape, settings)
    cpu_start = time.process_time()
    careamist.train(train_data=[noisy] * copies if copies > 1 else noisy, val_data=noisy)
    trained, cpu_trained = time.perf_counter(), time.process_time()
    predictions, _ = careamist.predict(noisy, data_type="array", axes="YX")
    output = np.asarray(predictions[0], np.float32).reshape(noisy.shape)
    done, cpu_done = time.perf_counter(), time.process_time()
    np.save(job["output"], output)
    timed_prediction = {}
    if settings.get("predict_input"):  # a second image, predicted and timed on its own (speed benchmark)
        image = np.load(settings["predict_input"]).astype(np.float32)
        wall, cpu = time.perf_counter(), time.process_time()
        careamist.predict(image, data_type="array", axes="YX")
        timed_prediction = {"predict_input_shape": list(image.shape),
                            "predict_input_seconds": time.perf_counter() - wall,
                            "predict_input_cpu_seconds": time.process_time() - cpu}

    model = config.algorithm_config.model
    manipulate = config.algorithm_config.n2v_config
    result = {
        "seconds": done - start,
        "train_seconds": trained - start,
        "predict_seconds": done - trained,
        "train_cpu_seconds": cpu_trained - cpu_start,
        "predict_cpu_seconds": cpu_done - cpu_trained,
        **timed_prediction,
        "trainer_steps": int(careamist.trainer.global_step),
        "logged_steps": logged_steps(work_dir),
        "epochs": int(careamist.trainer.current_epoch),
        "batches_per_epoch": careamist.trainer.num_training_batches,
        "image_copies": copies,
        "final_learning_rate": careamist.trainer.optimizers[0].param_groups[0]["lr"],
        "precision": str(careamist.trainer.precision),
        "careamics": careamics.__version__,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "used": {
            "patch_size": list(config.data_config.patching.patch_size),
            "train_patches_per_epoch": len(careamist.train_datamodule.train_dataset),
            "batch_size": config.data_config.batch_size,
            "depth": model.depth,
            "num_channels_init": model.num_channels_init,
            "struct_mask": None if manipulate.struct_mask is None else manipulate.struct_mask.model_dump(),
            "masked_pixel_percentage": manipulate.masked_pixel_percentage,
            "roi_size": manipulate.roi_size,
            "optimizer": config.algorithm_config.optimizer.model_dump(),
            "lr_scheduler": config.algorithm_config.lr_scheduler.model_dump(),
            "augmentations": [type(t).__name__ for t in config.data_config.augmentations],
            "normalization": config.data_config.normalization.name,
            "validation": "the training image itself (val_data), once per epoch",
        },
    }
    Path(job["result"]).write_text(json.dumps(result, indent=2, default=str))
    return result


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jobs", help="JSON file: a list of jobs, each {input, output, result, settings}")
    args = parser.parse_args(argv)
    jobs = json.loads(Path(args.jobs).read_text())
    return [run_job(job) for job in jobs]


if __name__ == "__main__":
    main()
