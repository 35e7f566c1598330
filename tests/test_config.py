"""Run configuration: layer precedence, validation before work, TOML round trip."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from segkit.config import parse_set, resolve_config, validate_config
from segkit.errors import ConfigError, UnknownNameError
from segkit.components.registry import get_registry
from segkit.tomlio import dumps_toml


@pytest.fixture(scope="module")
def registry():
    return get_registry()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_precedence_defaults_file_flags_set(tmp_path: Path) -> None:
    config = write(tmp_path / "run.toml", '[train]\nepochs = 7\nlr = 0.01\nbatch_size = 4\n[model]\nname = "unet"\nwidth = 16\n')
    document = resolve_config(config, {"train": {"lr": 0.02, "epochs": None}}, ["train.batch_size=2"])
    assert document["train"] == {"epochs": 7, "lr": 0.02, "batch_size": 2}
    assert document["model"] == {"name": "unet", "width": 16, "batch_norm": True}  # the default run's batch norm stays
    assert document["loss"] == {"name": "auto"}  # bce_dice or ce_dice once the labels are known


def test_a_flag_that_changes_the_component_drops_the_file_parameters(tmp_path: Path) -> None:
    config = write(tmp_path / "run.toml", '[model]\nname = "unet"\nwidth = 16\n')
    document = resolve_config(config, {"model": {"name": "smp_unet"}}, ["model.encoder_name='resnet18'"])
    assert document["model"] == {"name": "smp_unet", "encoder_name": "resnet18"}


def test_set_values_are_parsed_as_toml() -> None:
    assert parse_set("model.encoder_name=resnet34") == ("model", "encoder_name", "resnet34")
    assert parse_set("train.lr=3e-4") == ("train", "lr", 3e-4)
    assert parse_set("metrics.names=['dice', 'recall']") == ("metrics", "names", ["dice", "recall"])
    assert parse_set("train.amp=false") == ("train", "amp", False)
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_set("epochs=3")
    with pytest.raises(UnknownNameError, match="Did you mean 'train'"):
        parse_set("trian.epochs=3")


def test_unknown_key_lists_valid_keys_with_types(registry) -> None:
    with pytest.raises(UnknownNameError) as error:
        validate_config(resolve_config(sets=["train.epoch=3"]), registry)
    message = str(error.value)
    assert "Did you mean 'epochs'" in message and "epochs: int" in message and "lr: float" in message


def test_unknown_component_parameter_lists_its_parameters(registry) -> None:
    with pytest.raises(UnknownNameError) as error:
        validate_config(resolve_config(sets=["model.widht=8"]), registry)
    assert "Did you mean 'width'" in str(error.value) and "width: int" in str(error.value)


def test_wrong_type_is_rejected_with_the_expected_type(registry) -> None:
    with pytest.raises(ConfigError, match="'lr' of \\[train\\] must be float, got 'fast'"):
        validate_config(resolve_config(sets=["train.lr='fast'"]), registry)
    with pytest.raises(ConfigError, match="'width'.*must be int"):
        validate_config(resolve_config(sets=["model.width=8.5"]), registry)


def test_int_is_accepted_for_float(registry) -> None:
    config = validate_config(resolve_config(sets=["train.lr=1"]), registry)
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


@pytest.mark.parametrize(
    ("assignment", "fragment"),
    [
        ("train.lr=0", "train.lr must be greater than 0"),
        ("train.epochs=0", "train.epochs must be at least 1"),
        ("train.batch_size=0", "train.batch_size must be at least 1"),
        ("split.val_fraction=1.5", "split.val_fraction"),
        ("metrics.monitor='recall'", "metrics.monitor 'recall'"),
        ("split.folds=1", "split.folds"),
    ],
)
def test_impossible_settings_are_rejected(registry, assignment: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment.replace(".", "\\.").replace("'", ".")):
        validate_config(resolve_config(sets=[assignment]), registry)


def test_resolved_config_round_trips_through_toml(registry) -> None:
    config = validate_config(resolve_config(sets=["model.width=8", "metrics.names=['dice','iou','recall']"]), registry)
    again = tomllib.loads(dumps_toml(config.to_dict()))
    assert validate_config(again, registry).to_dict() == config.to_dict()


def test_shipped_configs_are_valid(registry) -> None:
    configs = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.toml"))
    assert configs, "configs/ ships example configurations"
    for path in configs:
        document = resolve_config(path)
        if "root" in document["dataset"] or document["dataset"]["name"] in ("lgg", "folder", "csv", "msd"):
            document["dataset"].setdefault("root", "unused-for-validation")
        validate_config(document, registry)


def test_monitor_may_name_the_per_case_or_pooled_value(registry) -> None:
    config = validate_config(resolve_config(sets=["metrics.monitor='dice_case'"]), registry)
    assert config.metrics.monitor == "dice_case"
    with pytest.raises(ConfigError, match="suffix _case"):
        validate_config(resolve_config(sets=["metrics.monitor='dice_mean'"]), registry)
