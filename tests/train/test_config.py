from pathlib import Path

import pytest

from lggseg.errors import LggsegError
from lggseg.train.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def test_committed_recipe_loads():
    cfg = load_config(ROOT / "configs" / "lgg_unet16.yaml")
    assert cfg.model.base_width == 16 and cfg.fold == 0 and cfg.augment.scale == (0.85, 1.15)


def test_unknown_key_and_bad_value_are_user_errors(tmp_path):
    (tmp_path / "a.yaml").write_text("epochz: 3\n")
    with pytest.raises(LggsegError, match="unknown key"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("model:\n  depth: 0\n")
    with pytest.raises(LggsegError, match="depth"):
        load_config(tmp_path / "b.yaml")
    (tmp_path / "c.yaml").write_text("[1, 2")
    with pytest.raises(LggsegError, match="invalid YAML"):
        load_config(tmp_path / "c.yaml")


def test_final_recipe_holds_out_the_bundled_demo_patients():
    from lggseg.data.bundled import sample_root

    cfg = load_config(ROOT / "configs" / "lgg_unet12_v3_final.yaml")
    demo = sorted(p.name for p in sample_root().iterdir() if p.is_dir())
    assert cfg.fold == -1 and sorted(cfg.holdout) == demo
    recipe = load_config(ROOT / "configs" / "lgg_unet12_v3.yaml")
    assert cfg.replace(fold=recipe.fold, holdout=()) == recipe  # otherwise the CV'd recipe, unchanged


def test_holdout_must_be_a_list(tmp_path):
    (tmp_path / "h.yaml").write_text("holdout: TCGA_CS_4944_20010208\n")
    with pytest.raises(LggsegError, match="holdout"):
        load_config(tmp_path / "h.yaml")


def test_v5_candidate_is_v3_with_patient_balanced_tumor_draws():
    v3 = load_config(ROOT / "configs" / "lgg_unet12_v3.yaml")
    v5 = load_config(ROOT / "configs" / "lgg_unet12_v5.yaml")
    assert v5.tumor_balance == 0.5 and v5.replace(tumor_balance=0.0) == v3


def test_tumor_balance_outside_0_1_is_a_user_error(tmp_path):
    (tmp_path / "t.yaml").write_text("tumor_balance: 2\n")
    with pytest.raises(LggsegError, match="tumor_balance"):
        load_config(tmp_path / "t.yaml")
