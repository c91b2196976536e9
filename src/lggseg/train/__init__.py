"""Training: config, run folder, the loop, augmentation, losses, calibration, cross-validation, DDP."""
