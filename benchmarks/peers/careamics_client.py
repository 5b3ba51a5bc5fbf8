"""CAREamics side by side: find its interpreter, build the runner's jobs, run them, read the results.

CAREamics lives in its own virtual environment (benchmarks/peers/setup_careamics.sh creates it in
benchmarks/.venv-careamics); the suite talks to it only through files: the noisy image as .npy, the
settings as JSON, and back the denoised .npy and a result JSON (careamics_runner.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

RUNNER = Path(__file__).resolve().with_name("careamics_runner.py")
DEFAULT_VENV = Path(__file__).resolve().parents[1] / ".venv-careamics"
MIN_SPAN, MAX_SPAN = 3, 15  # CAREamics 0.3.5: StructMaskConfig.span is odd, 3 <= span <= 15
AXES = ("horizontal", "vertical")


class CareamicsError(RuntimeError):
    """The runner failed or wrote no usable result; the message ends with the tail of its log."""


def find_python(explicit: str | os.PathLike | None = None, environ=None) -> Path | None:
    """The CAREamics interpreter: `explicit`, else benchmarks/.venv-careamics, else $CAREAMICS_PYTHON."""
    environ = os.environ if environ is None else environ
    if explicit:
        return Path(explicit)
    default = DEFAULT_VENV / "bin" / "python"
    if default.exists():
        return default
    variable = environ.get("CAREAMICS_PYTHON")
    return Path(variable) if variable else None


def best_span(support: np.ndarray, axis: str) -> int:
    """The smallest odd span of a CAREamics line mask along `axis` that covers the centred `support`
    (an odd square of bools), within CAREamics' limits [3, 15]."""
    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    support = np.asarray(support, bool)
    centre = support.shape[0] // 2
    ys, xs = np.nonzero(support)
    offsets = xs - centre if axis == "horizontal" else ys - centre
    half = int(np.abs(offsets).max()) if offsets.size else 0
    return int(min(max(2 * half + 1, MIN_SPAN), MAX_SPAN))


def runner_settings(*, steps: int, patch_size: int, batch_size: int, depth: int, base_channels: int,
                    steps_per_epoch: int | None = None, axis: str = "none", span: int = 5, seed: int = 0,
                    threads: int = 1, accelerator: str = "cpu", work_dir: str | os.PathLike = ".") -> dict:
    """The settings of one runner job. `seed` is ours; CAREamics needs a positive one (seed + 1).
    With `steps_per_epoch` the runner gives CAREamics enough copies of the image for epochs of that
    many batches (None: CAREamics' own epochs, one pass over the patches of one image)."""
    if axis != "none" and axis not in AXES:
        raise ValueError(f"axis must be 'none' or one of {AXES}, got {axis!r}")
    if axis != "none" and not (MIN_SPAN <= span <= MAX_SPAN and span % 2 == 1):
        raise ValueError(f"CAREamics spans are odd, {MIN_SPAN}..{MAX_SPAN}; got {span}")
    return {"steps": int(steps), "steps_per_epoch": None if steps_per_epoch is None else int(steps_per_epoch),
            "patch_size": int(patch_size), "batch_size": int(batch_size), "depth": int(depth),
            "num_channels_init": int(base_channels), "struct_axis": axis, "struct_span": int(span),
            "seed": int(seed) + 1, "threads": int(threads), "accelerator": accelerator, "work_dir": str(work_dir)}


@dataclass
class JobResult:
    output: np.ndarray
    result: dict
    notes: list[str] = field(default_factory=list)


def check_result(result: dict, settings: dict) -> list[str]:
    """What did not come out as asked: steps (trainer and CSV log), batch, patch, width, depth, precision."""
    notes = []
    if result.get("trainer_steps") != settings["steps"]:
        notes.append(f"trainer ran {result.get('trainer_steps')} steps, not {settings['steps']}")
    if result.get("logged_steps") not in (None, settings["steps"]):
        notes.append(f"CSV log shows {result.get('logged_steps')} steps, not {settings['steps']}")
    used = result.get("used", {})
    wanted = {"batch_size": settings["batch_size"], "depth": settings["depth"],
              "num_channels_init": settings["num_channels_init"],
              "patch_size": [settings["patch_size"]] * 2}
    for key, value in wanted.items():
        if key in used and used[key] != value:
            notes.append(f"{key} {used[key]} instead of {value}")
    if "precision" in settings and result.get("precision") not in (None, settings["precision"]):
        notes.append(f"Lightning precision {result.get('precision')}, not {settings['precision']}")
    wanted_batches = settings.get("steps_per_epoch")
    if wanted_batches and result.get("batches_per_epoch") not in (None, wanted_batches):
        notes.append(f"{result.get('batches_per_epoch')} batches per epoch, not {wanted_batches}")
    patches = used.get("train_patches_per_epoch")
    if patches is not None and result.get("batches_per_epoch") == 1 and patches < settings["batch_size"]:
        notes.append(f"only {patches} training patches per step (batch {settings['batch_size']})")
    return notes


def read_result(output_path: Path, result_path: Path, settings: dict) -> JobResult:
    if not output_path.is_file() or not result_path.is_file():
        raise CareamicsError(f"the runner wrote no {output_path.name if not output_path.is_file() else result_path.name}")
    result = json.loads(result_path.read_text())
    for key in ("seconds", "trainer_steps"):
        if key not in result:
            raise CareamicsError(f"the runner's result has no {key!r}: {sorted(result)}")
    return JobResult(np.load(output_path), result, check_result(result, settings))


def run_jobs(python: str | os.PathLike, jobs: list[tuple[np.ndarray, dict]], work_dir: str | os.PathLike,
             timeout: float | None = None) -> tuple[list[JobResult], float]:
    """Run the (noisy image, settings) jobs in one CAREamics process; return their results and the
    process overhead in seconds (its wall time minus the jobs' own times: start-up and imports)."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    listing, paths = [], []
    for index, (noisy, settings) in enumerate(jobs):
        noisy_path = work_dir / f"job{index}_noisy.npy"
        np.save(noisy_path, np.asarray(noisy, np.float32))
        output_path, result_path = work_dir / f"job{index}_output.npy", work_dir / f"job{index}_result.json"
        settings = {**settings, "work_dir": str(work_dir / f"job{index}")}
        listing.append({"input": str(noisy_path), "output": str(output_path), "result": str(result_path),
                        "settings": settings})
        paths.append((output_path, result_path, settings))
    jobs_path = work_dir / "jobs.json"
    jobs_path.write_text(json.dumps(listing, indent=2))
    threads = str(max(s["threads"] for _, _, s in paths)) if paths else "1"
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    log_path = work_dir / "runner.log"
    start = time.perf_counter()
    with log_path.open("w") as log:
        try:
            completed = subprocess.run([str(python), str(RUNNER), str(jobs_path)], stdout=log, stderr=subprocess.STDOUT,
                                       env=env, timeout=timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise CareamicsError(f"{type(err).__name__}: {err}\n{_tail(log_path)}") from None
    wall = time.perf_counter() - start
    if completed.returncode != 0:
        raise CareamicsError(f"the runner exited with {completed.returncode}\n{_tail(log_path)}")
    results = []
    for output_path, result_path, settings in paths:
        try:
            results.append(read_result(output_path, result_path, settings))
        except CareamicsError as err:
            raise CareamicsError(f"{err}\n{_tail(log_path)}") from None
    return results, max(0.0, wall - sum(r.result["seconds"] for r in results))


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
