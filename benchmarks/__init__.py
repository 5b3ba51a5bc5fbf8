"""Benchmarks of napari-autostructn2v: denoising quality and speed next to its peers.

Run from the repository root:

    python -m benchmarks.quality [--quick]   # PSNR / SSIM / mask accuracy per noise type and method
    python -m benchmarks.speed [--quick]     # ROI selection, masking, training and inference speed

Each suite prints markdown tables and writes them as JSON to benchmarks/results/<suite>.json.
"""
