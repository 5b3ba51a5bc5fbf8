"""Self-supervised denoising of images with structured noise, with an automatically detected structN2V mask."""
