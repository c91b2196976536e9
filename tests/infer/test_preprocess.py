import numpy as np
import torch

from lggseg.infer.preprocess import normalize, volume_stats


def test_volume_stats_and_normalize_zscore_the_head():
    rng = np.random.default_rng(0)
    images = np.zeros((4, 32, 32, 3), np.uint8)
    images[:, 8:24, 8:24] = rng.integers(50, 200, (4, 16, 16, 3))
    stats = volume_stats(images)
    assert stats.shape == (4, 3)
    x = normalize(torch.from_numpy(images).permute(0, 3, 1, 2).float(), torch.from_numpy(stats))
    head = x[:, :, 8:24, 8:24]
    assert abs(float(head.mean())) < 0.1 and abs(float(head.std()) - 1) < 0.1


def test_inference_does_not_import_training_code():
    import subprocess
    import sys

    code = (
        "import sys, lggseg.infer.segmenter; bad = [m for m in sys.modules if m.startswith('lggseg.train')]; assert "
        "not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
