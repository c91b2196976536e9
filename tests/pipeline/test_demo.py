import json

import numpy as np
import pytest
from PIL import Image

from lggseg.evaluation import render
from lggseg.pipeline.demo import run_demo


def test_demo_writes_every_output_and_segments_well(tmp_path):
    """The shipped model on the bundled sample: Dice 0.90 and 0.89 when this test was written."""
    lines: list[str] = []
    report = run_demo(tmp_path, log=lines.append)
    assert len(report["patients"]) == 2
    for row in report["patients"]:
        folder = tmp_path / row["patient"]
        assert (folder / f"{row['patient']}_summary.png").stat().st_size > 10_000
        assert (folder / f"{row['patient']}_mask.nii.gz").is_file()
        overlays = sorted(p.name for p in (folder / "overlays").glob("*.png"))
        assert len(overlays) == 20
        # zero-padded: name order is slice order (1, 2, ... 10, not 1, 10, 11)
        assert overlays == [f"{row['patient']}_{n:02d}_overlay.png" for n in range(1, 21)]
        assert row["dice"] >= 0.85, row
        assert row["seen_in_training"] is False  # the shipped final model held the sample patients out
        assert any(line.startswith(f"{row['patient']}: Dice") and "held out" in line for line in lines)
        # the sample has masks: its overlays show the ground truth too, and say which outline is which
        with Image.open(folder / "overlays" / overlays[9]) as picture:
            rgb = np.asarray(picture.convert("RGB"))
        assert (rgb[40:] == render.TRUTH_COLOR).all(-1).sum() > 20  # the truth outline, below the label
        assert (rgb[40:] == render.PRED_COLOR).all(-1).sum() > 20
        assert (np.abs(rgb[:40, :160].astype(int) - render.TRUTH_COLOR) < 40).all(-1).sum() > 10  # its label
    assert (
        json.loads((tmp_path / "demo.json").read_text())["patients"][0]["patient"] == report["patients"][0]["patient"]
    )


def test_demo_says_when_the_model_trained_on_a_sample_patient(tmp_path):
    import torch

    from lggseg.data.bundled import sample_root
    from lggseg.data.dataset import index_dataset
    from lggseg.model.bundle import save_weights
    from lggseg.model.unet import UNet, UNetConfig

    names = [p.name for p in index_dataset(sample_root()).patients]
    torch.manual_seed(0)
    weights = tmp_path / "seen.safetensors"
    save_weights(weights, UNet(UNetConfig(base_width=4, depth=2)).eval(), info={"fold": 0, "trained_on": names[:1]})
    lines: list[str] = []
    report = run_demo(tmp_path / "out", weights=weights, log=lines.append)
    assert [row["seen_in_training"] for row in report["patients"]] == [True, False]
    assert "TRAINING patient" in next(line for line in lines if line.startswith(f"{names[0]}: Dice"))


def test_demo_in_accurate_mode_reproduces_the_cross_validated_ensemble(tmp_path):
    """``lggseg demo --accurate``: the packaged 4-network ensemble is the fold-0 models of recipes v3, v2,
    v4 and v5, and the sample patients are fold-0 test patients, so each Dice must be the one the
    cross-validation recorded for them (docs/cv/ensemble_4recipes.json: 0.9033 and 0.9370), held out."""
    from lggseg.infer.ensemble import accurate_path

    lines: list[str] = []
    report = run_demo(tmp_path, weights=accurate_path(), log=lines.append)
    dice = {row["patient"]: row["dice"] for row in report["patients"]}
    assert dice["TCGA_CS_4944_20010208"] == pytest.approx(0.9033, abs=0.003)
    assert dice["TCGA_CS_6667_20011105"] == pytest.approx(0.9370, abs=0.003)
    assert all(row["seen_in_training"] is False for row in report["patients"])
    assert sum("held out" in line for line in lines) == 2
