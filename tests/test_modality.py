"""train.modality_dropout: training inputs that lack a sequence, filled as the dataset fills them, in both loader paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from clihelp import segkit
from segkit.config import ComponentSpec, RunConfig
from segkit.data.modality import ModalityDropout, WithModalityDropout, modality_dropout_for
from segkit.errors import ConfigError
from segkit.train.assemble import build_data, make_split


def stacked_images(n: int = 6, slices: int = 3, channels: int = 3, size: int = 4) -> torch.Tensor:
    """``(n, slices * channels, size, size)``: every channel holds its own index plus 100 per sample."""
    values = torch.arange(slices * channels, dtype=torch.float32)[None, :, None, None] + 100 * torch.arange(n)[:, None, None, None]
    return values.expand(n, slices * channels, size, size).clone()


def test_a_dropped_channel_takes_the_fill_channel_of_the_same_slice_in_every_stacked_slice() -> None:
    dropout = ModalityDropout(0.5, slice_channels=3, fill=1)
    images = stacked_images()
    drops = torch.tensor([[True, False, False], [False, False, True], [True, False, True],
                          [False, False, False], [True, False, False], [False, False, False]])
    out = dropout.apply(images.clone(), drops)
    for sample in range(6):
        for s in range(3):  # slices n-1, n, n+1
            for channel in range(3):
                source = 1 if drops[sample, channel] else channel
                assert out[sample, 3 * s + channel, 0, 0] == images[sample, 3 * s + source, 0, 0]


def test_the_fill_channel_is_never_dropped_and_zeros_never_drop_every_channel() -> None:
    generator = torch.Generator().manual_seed(0)
    with_fill = ModalityDropout(1.0, slice_channels=3, fill=1).draw(50, generator)
    assert with_fill[:, [0, 2]].all() and not with_fill[:, 1].any()  # p = 1: only FLAIR remains

    drops = ModalityDropout(0.9, slice_channels=3).draw(2000, generator)
    assert drops.any() and not drops.all(dim=1).any()
    zeroed = ModalityDropout(0.9, slice_channels=3).apply(stacked_images(n=1) + 1, torch.tensor([[True, False, True]]))
    assert (zeroed[0, [0, 2, 3, 5, 6, 8]] == 0).all() and (zeroed[0, [1, 4, 7]] > 0).all()


def test_the_share_of_dropped_channels_is_p() -> None:
    drops = ModalityDropout(0.2, slice_channels=3, fill=1).draw(20_000, torch.Generator().manual_seed(1))
    assert abs(drops[:, 0].float().mean().item() - 0.2) < 0.015
    assert abs(drops[:, 2].float().mean().item() - 0.2) < 0.015


def test_the_per_item_and_the_batched_forms_agree() -> None:
    dropout = ModalityDropout(0.5, slice_channels=3, fill=1)
    images = stacked_images()
    drops = dropout.draw(len(images), torch.Generator().manual_seed(3))
    batched = dropout.apply(images.clone(), drops)
    for sample in range(len(images)):
        one = dropout.apply_array(images[sample].permute(1, 2, 0).numpy(), drops[sample])
        assert np.array_equal(one, batched[sample].permute(1, 2, 0).numpy())


def test_an_item_draws_from_its_seed_alone() -> None:
    image = np.tile(np.arange(9, dtype=np.uint8), (8, 8, 1))
    mask = np.zeros((8, 8), dtype=np.uint8)
    transform = WithModalityDropout(ModalityDropout(0.5, slice_channels=3, fill=1), None)

    def draw(seed: int) -> np.ndarray:
        transform.set_random_seed(seed)
        return transform(image=image, mask=mask)["image"]

    outcomes = [draw(seed) for seed in range(40)]
    assert all(np.array_equal(draw(seed), outcomes[seed]) for seed in range(40))
    assert len({o.tobytes() for o in outcomes}) == 4  # keep both, lose pre, lose post, lose both
    assert np.array_equal(image, np.tile(np.arange(9, dtype=np.uint8), (8, 8, 1)))  # the cached image is untouched


def test_wrong_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="between 0 and 1"):
        ModalityDropout(1.5, slice_channels=3)
    with pytest.raises(ConfigError, match="1 channel per slice"):
        ModalityDropout(0.2, slice_channels=1)
    assert modality_dropout_for(0.0, object()) is None


def test_an_out_of_range_probability_is_refused_before_training(tmp_path: Path) -> None:
    result = segkit("run", "--set", "train.modality_dropout=1.5", "--epochs", "1", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "train.modality_dropout must be between 0 (off) and 1" in result.stderr
    assert "Traceback" not in result.stderr
    # below 0 too (in-process: the refusal path is the same)
    from click.testing import CliRunner

    from segkit.cli import cli

    below = CliRunner().invoke(cli, ["run", "--set", "train.modality_dropout=-0.1", "--epochs", "1",
                                     "--out", str(tmp_path / "r2")])
    assert below.exit_code == 2 and isinstance(below.exception, SystemExit), below.output[-2000:]
    assert "train.modality_dropout must be between 0 (off) and 1" in below.output
    assert not (tmp_path / "r2").exists()


def test_single_channel_data_is_refused_with_what_to_do(tmp_path: Path) -> None:
    image_dir, mask_dir = tmp_path / "data" / "images", tmp_path / "data" / "masks"
    image_dir.mkdir(parents=True)
    mask_dir.mkdir(parents=True)
    import cv2

    for i in range(8):
        cv2.imwrite(str(image_dir / f"s{i}.png"), np.full((16, 16), 40 * (i % 4), np.uint8))
        cv2.imwrite(str(mask_dir / f"s{i}.png"), np.zeros((16, 16), np.uint8))
    result = segkit("run", "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--set", "model.width=8",
                    "--set", "train.modality_dropout=0.2", "--epochs", "1", "--batch-size", "2", "--quiet",
                    "--out", str(tmp_path / "r"))
    assert result.returncode != 0
    assert "has 1 channel per slice" in result.stderr and "train.modality_dropout = 0" in result.stderr
    assert "Traceback" not in result.stderr


def lgg_data(lgg_small: Path, loader: str):
    """The assembled data of an LGG run with context 1 and every droppable sequence dropped."""
    from segkit.components.registry import get_registry

    config = RunConfig(ComponentSpec("unet"), ComponentSpec("bce_dice"),
                       ComponentSpec("lgg", {"root": str(lgg_small), "context": 1, "cache": True}))
    config.train.modality_dropout = 1.0
    config.train.augment = "none"
    config.train.batch_size = 4
    dataset = get_registry().build("dataset", "lgg", **config.dataset.params)
    return build_data(config, dataset, make_split(config, dataset), loader=loader, device=torch.device("cpu"))


@pytest.mark.parametrize("loader", ["workers", "device"])
def test_lgg_training_batches_carry_flair_in_place_of_the_dropped_sequences(lgg_small: Path, loader: str) -> None:
    """LGG fills a missing pre- or post-contrast sequence with FLAIR; at p = 1 every training input looks like that."""
    data = lgg_data(lgg_small, loader)
    assert data.dataset.missing_channel_fill == 1
    images, _masks, _indices = next(iter(data.loaders["train"]))
    assert images.shape[1] == 9
    for s in range(3):
        flair = images[:, 3 * s + 1]
        assert torch.equal(images[:, 3 * s], flair) and torch.equal(images[:, 3 * s + 2], flair)
    assert not torch.equal(flair, torch.zeros_like(flair))
    val_images, _, _ = next(iter(data.loaders["val"]))
    assert not torch.equal(val_images[:, 0], val_images[:, 1])  # validation sees the stored sequences
