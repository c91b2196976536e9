from pathlib import Path

import pytest

from lggseg.errors import LggsegError
from lggseg.train.config import TrainConfig, load_config

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
    with pytest.raises(LggsegError, match="is a folder"):
        load_config(tmp_path)
    (tmp_path / "d.yaml").write_bytes(b"\xff\xfe\x00seed: 1")
    with pytest.raises(LggsegError, match="not a text"):
        load_config(tmp_path / "d.yaml")


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


def test_end_fine_tune_is_its_control_plus_tumor_end_negatives():
    control = load_config(ROOT / "configs" / "lgg_unet12_v3_ctrlft.yaml")
    ends = load_config(ROOT / "configs" / "lgg_unet12_v3_endsft.yaml")
    assert ends.end_fraction == 0.15 and ends.replace(end_fraction=0.0) == control
    assert control.init_weights == "docs/cv/fold_{fold}/run/best.safetensors" and control.epochs == 5


def test_fractions_over_one_are_a_user_error(tmp_path):
    (tmp_path / "t.yaml").write_text("fg_fraction: 0.5\nvertex_fraction: 0.3\nend_fraction: 0.3\n")
    with pytest.raises(LggsegError, match="end_fraction"):
        load_config(tmp_path / "t.yaml")


def test_extends_merges_sections_key_by_key_through_a_chain(tmp_path):
    base = "seed: 1\nepochs: 7\nmodel:\n  base_width: 16\n  depth: 3\naugment:\n  flip_prob: 0.2\n"
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "mid").mkdir()
    (tmp_path / "mid" / "mid.yaml").write_text("extends: ../base.yaml\nseed: 2\nmodel:\n  base_width: 8\n")
    (tmp_path / "leaf.yaml").write_text("extends: mid/mid.yaml\nepochs: 9\naugment:\n  gain_std: 0.5\n")
    cfg = load_config(tmp_path / "leaf.yaml")
    assert (cfg.seed, cfg.epochs) == (2, 9)
    assert (cfg.model.base_width, cfg.model.depth) == (8, 3)  # depth comes from the base
    assert (cfg.augment.flip_prob, cfg.augment.gain_std) == (0.2, 0.5)


def test_extends_errors_name_the_file(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(LggsegError, match="circle"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: gone.yaml\n")
    with pytest.raises(LggsegError, match=r"gone.yaml: config file not found \(extended by .*c.yaml\)"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "d.yaml").write_text("extends: [a.yaml, b.yaml]\n")
    with pytest.raises(LggsegError, match="must name one YAML file"):
        load_config(tmp_path / "d.yaml")


@pytest.mark.parametrize(
    ("name", "changes"),
    [
        ("lgg_unet12_v3_seed43", {"seed": 43}),
        ("lgg_unet8_v3_seed43", {"seed": 43, "model": {"base_width": 8}}),
        ("lgg_unet12_v5", {"tumor_balance": 0.5}),
        ("lgg_unet12_v4", {"model": {"in_channels": 15, "context_slices": 2}}),
        ("lgg_unet12_v3_refit", {"n_validation": 0, "calibrate": False, "rule_from": "docs/cv/fold_{fold}/run"}),
    ],
)
def test_recipe_variants_change_only_what_their_header_says(name, changes):
    recipe = load_config(ROOT / "configs" / "lgg_unet12_v3.yaml").to_dict()
    variant = load_config(ROOT / "configs" / f"{name}.yaml").to_dict()
    differing = {k: v for k, v in variant.items() if v != recipe[k]}
    for section in ("model", "augment"):
        if section in differing:
            differing[section] = {k: v for k, v in variant[section].items() if v != recipe[section][k]}
    assert differing == changes


def test_compile_is_a_run_setting_not_part_of_the_recipe(tmp_path):
    from lggseg.train.cv import recipe

    (tmp_path / "a.yaml").write_text("compile: sometimes\n")
    with pytest.raises(LggsegError, match="compile must be auto, on or off"):
        load_config(tmp_path / "a.yaml")
    cfg = load_config(ROOT / "configs" / "lgg_unet12_v3.yaml")
    assert cfg.compile == "auto"
    assert recipe(cfg.replace(compile="off")) == recipe(cfg)  # a fold may resume with another setting
    stored = cfg.to_dict()
    del stored["compile"]  # a fold trained before the setting existed
    assert recipe(stored) == recipe(cfg)


def test_bare_on_and_off_in_yaml_are_the_switch_values(tmp_path):
    """YAML 1.1 reads ``on`` / ``off`` as booleans; the switches take them as written."""
    (tmp_path / "a.yaml").write_text("bf16: on\ncompile: off\n")
    cfg = load_config(tmp_path / "a.yaml")
    assert (cfg.bf16, cfg.compile) == ("on", "off")
    (tmp_path / "b.yaml").write_text("bf16: 'off'\ncompile: auto\n")
    quoted = load_config(tmp_path / "b.yaml")
    assert (quoted.bf16, quoted.compile) == ("off", "auto")


def test_a_run_without_validation_patients_must_adopt_its_rule_and_cannot_choose_or_stop_early(tmp_path):
    with pytest.raises(LggsegError, match="n_validation must be >= 1, or 0 with rule_from"):
        TrainConfig(n_validation=0, calibrate=False)
    with pytest.raises(LggsegError, match="rule_from and calibrate both choose"):
        TrainConfig(n_validation=0, rule_from="runs/a")  # calibrate defaults to true
    with pytest.raises(LggsegError, match="patience"):
        TrainConfig(n_validation=0, calibrate=False, rule_from="runs/a", patience=5)
    assert TrainConfig(n_validation=0, calibrate=False, rule_from="runs/a").n_validation == 0
