"""TrainingConfig: seed defaults, constraints with clear messages, config files."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakedet.config_files import build_config, dump_config_yaml, load_config_file
from fakedet.errors import ConfigError


def test_defaults_follow_the_seed(tmp_path: Path) -> None:
    config = build_config({"data_root": tmp_path})
    assert config.epochs == 50
    assert config.batch_size == 16
    assert config.lr == pytest.approx(1.25e-5)
    assert config.output_dir == Path("checkpoints")
    assert config.mode == "fast"
    assert config.img_size == 256
    assert config.use_amp is False
    assert (config.regression_weight, config.classification_weight, config.ranking_weight) == (
        1.0,
        0.3,
        0.2,
    )
    assert (config.scheduler_type, config.warmup_epochs, config.min_lr) == ("cosine", 5, 1e-6)
    assert config.gradient_accumulation_steps == 1
    assert config.early_stopping_patience == 15
    assert config.validate_interval == 1
    assert config.use_tensorboard is True
    assert config.device == "auto"
    assert (
        config.pin_memory,
        config.persistent_workers,
        config.prefetch_factor,
        config.drop_last,
    ) == (
        True,
        True,
        2,
        True,
    )


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"epochs": 0}, "epochs = 0 is invalid"),
        ({"img_size": 100}, "multiple of 32"),
        ({"img_size": 32}, "img_size = 32 is invalid"),
        ({"lr": -1.0}, "lr = -1.0 is invalid"),
        ({"lr": 1e-5, "min_lr": 1e-4}, "min_lr (0.0001) must not exceed lr (1e-05)"),
        ({"regression_weight": 0, "classification_weight": 0, "ranking_weight": 0}, "all 0"),
        ({"mode": "huge"}, "mode = 'huge' is invalid"),
        ({"device": "tpu"}, "must be auto, cpu, cuda, cuda:N or mps"),
        ({"batch_size": 0}, "batch_size = 0 is invalid"),
        ({"colour": "red"}, "unknown setting 'colour'"),
    ],
)
def test_bad_values_name_field_value_and_range(tmp_path: Path, values: dict, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config({"data_root": tmp_path, **values})
    assert expected in str(caught.value)


def test_batch_size_accepts_auto(tmp_path: Path) -> None:
    assert build_config({"data_root": tmp_path, "batch_size": "auto"}).batch_size == "auto"


def test_yaml_and_toml_files_load(tmp_path: Path) -> None:
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("epochs: 7\nmode: full\n")
    toml_file = tmp_path / "run.toml"
    toml_file.write_text('epochs = 9\nmode = "fast"\n')
    assert load_config_file(yaml_file) == {"epochs": 7, "mode": "full"}
    assert load_config_file(toml_file) == {"epochs": 9, "mode": "fast"}


def test_bad_yaml_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match="could not be parsed"):
        load_config_file(broken)


def test_the_full_model_defaults_to_the_down_scale_augmentation(tmp_path: Path) -> None:
    from fakedet.defaults import FULL_RESIZE_PROB

    assert build_config({"data_root": tmp_path}).resize_prob == 0.0  # fast
    full = build_config({"data_root": tmp_path, "mode": "full"})
    assert full.resize_prob == FULL_RESIZE_PROB > 0
    # Given values win, 0 included; a saved full config keeps its own value on reload.
    assert (
        build_config({"data_root": tmp_path, "mode": "full", "resize_prob": 0.0}).resize_prob == 0
    )
    assert (
        build_config({"data_root": tmp_path, "mode": "fast", "resize_prob": 0.3}).resize_prob == 0.3
    )
    import yaml

    assert build_config(yaml.safe_load(dump_config_yaml(full))) == full
    # A backbone model keeps 0: the protocol measured only the built-in full model.
    probe = build_config({"data_root": tmp_path, "mode": "full", "backbone": "timm:resnet18"})
    assert probe.resize_prob == 0.0


def test_the_full_model_defaults_to_no_spectrum_read(tmp_path: Path) -> None:
    import yaml

    assert build_config({"data_root": tmp_path}).spectrum_read is True  # fast
    full = build_config({"data_root": tmp_path, "mode": "full"})
    assert full.spectrum_read is False
    # Given values win either way, and a saved config keeps its own value on reload.
    given = build_config({"data_root": tmp_path, "mode": "full", "spectrum_read": True})
    assert given.spectrum_read is True
    assert build_config(yaml.safe_load(dump_config_yaml(given))) == given
    fast_off = build_config({"data_root": tmp_path, "spectrum_read": False})
    assert fast_off.spectrum_read is False
    # A backbone model keeps the field's default: the protocol measured the built-in full model.
    probe = build_config({"data_root": tmp_path, "mode": "full", "backbone": "timm:resnet18"})
    assert probe.spectrum_read is True


def test_resolved_config_round_trips_through_yaml(tmp_path: Path) -> None:
    import yaml

    config = build_config({"data_root": tmp_path, "epochs": 3, "batch_size": "auto"})
    assert build_config(yaml.safe_load(dump_config_yaml(config))) == config


@pytest.mark.parametrize("name", ["fast_cpu.toml", "full_mode.yaml"])
def test_example_configs_are_valid(name: str, tmp_path: Path) -> None:
    settings = load_config_file(Path(__file__).parent.parent / "examples" / name)
    config = build_config({**settings, "data_root": tmp_path})
    assert config.mode in ("fast", "full")
    # Every setting in the file reaches the config as written; the rest keep the seed defaults.
    assert settings and "mode" in settings and "epochs" in settings
    for key, value in settings.items():
        assert getattr(config, key) == value, key
    defaults = build_config({"data_root": tmp_path})
    for key in ("ranking_margin", "grad_clip", "seed", "val_split"):
        if key not in settings:
            assert getattr(config, key) == getattr(defaults, key), key
    assert config.data_root == tmp_path
