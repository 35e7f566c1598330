"""Batched per-sample augmentation: albumentations-equivalent geometry, masks in {0, 1}, determinism."""

from __future__ import annotations

import dataclasses

import albumentations as A
import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segkit.data import build_transform
from segkit.data.augment_presets import PRESET_NAMES as BATCH_PRESETS
from segkit.data.augment_presets import preset_ranges
from segkit.data.batch_augment import AugmentParams, AugmentRanges, BatchAugment, augment_generator
from segkit.errors import ConfigError, UnknownNameError
from segkit_builtins.datasets.synthetic import SyntheticDataset

GEOMETRY_ONLY = dataclasses.replace(preset_ranges("heavy"), brightness_contrast_p=0.0, gamma_p=0.0, noise_p=0.0)
EXTREME = AugmentRanges(hflip_p=0.5, vflip_p=0.5, affine_p=1.0, rotate=(-180, 180), scale=(0.2, 5.0),
                        translate=(-0.8, 0.8), shear=(-70, 70), elastic_p=0.5, elastic_alpha=500.0,
                        elastic_sigma=2.0, grid_p=0.5, grid_limit=0.95, brightness_contrast_p=1.0,
                        brightness=(-1, 1), contrast=(-1, 3), gamma_p=1.0, gamma=(0.1, 5.0), noise_p=1.0,
                        noise_std=(0.0, 1.0), blur_p=1.0, blur_sigma=(0.0, 5.0))


def synthetic_batch(n: int = 6, size: int = 64, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic MRI-like slices as float batches: images (n, C, size, size), masks (n, 1, size, size)."""
    data = SyntheticDataset(count=n, size=size, lesion_fraction=1.0, cache=False)
    pairs = [data.read(i) for i in range(n)]
    images = torch.from_numpy(np.stack([p[0] for p in pairs])).permute(0, 3, 1, 2).float() / 255
    masks = torch.from_numpy(np.stack([p[1] for p in pairs]))[:, None].float()
    return images.repeat(1, channels // 3, 1, 1), masks


def uint8_sample(size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    image, mask = SyntheticDataset(count=1, size=size, seed=seed, lesion_fraction=1.0, cache=False).read(0)
    return image, mask


def to_batch(image: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255,
            torch.from_numpy(mask.copy())[None, None].float())


def to_numpy(images: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    return images[0].permute(1, 2, 0).numpy(), masks[0, 0].numpy()


def forced(n: int = 1, **fields) -> AugmentParams:
    params = AugmentParams.identity(n)
    for name, value in fields.items():
        setattr(params, name, torch.as_tensor(value, dtype=getattr(params, name).dtype).reshape(
            getattr(params, name).shape))
    return params


# --- presets --------------------------------------------------------------------------------------------------

def test_presets_and_unknown_name():
    assert BATCH_PRESETS == ("none", "light", "heavy")
    assert preset_ranges("none").is_identity and not preset_ranges("light").is_identity
    with pytest.raises(UnknownNameError, match="augmentation preset 'haevy'.*heavy"):
        preset_ranges("haevy")


@pytest.mark.parametrize("preset", ["light", "heavy"])
def test_preset_ranges_match_the_albumentations_preset(preset):
    ranges, found = preset_ranges(preset), set()
    for t in build_transform(preset, 64, train=True).transforms:
        if isinstance(t, A.HorizontalFlip):
            assert ranges.hflip_p == t.p
        elif isinstance(t, A.VerticalFlip):
            assert ranges.vflip_p == t.p
        elif isinstance(t, A.Affine):
            assert ranges.affine_p == t.p and tuple(ranges.rotate) == tuple(t.rotate)
            assert {k: tuple(v) for k, v in t.scale.items()} == {"x": ranges.scale, "y": ranges.scale}
            assert {k: tuple(v) for k, v in t.translate_percent.items()} == {"x": ranges.translate,
                                                                             "y": ranges.translate}
            assert {k: tuple(v) for k, v in t.shear.items()} == {"x": ranges.shear, "y": ranges.shear}
            assert not t.keep_ratio and not t.balanced_scale
        elif isinstance(t, A.OneOf):
            elastic, grid = t.transforms
            assert t.p == ranges.elastic_p + ranges.grid_p and elastic.p == grid.p  # equally likely
            assert (elastic.alpha, elastic.sigma) == (ranges.elastic_alpha, ranges.elastic_sigma)
            assert not elastic.approximate and not elastic.same_dxdy and elastic.noise_distribution == "gaussian"
            assert grid.num_steps == ranges.grid_steps and tuple(grid.distort_limit) == (-ranges.grid_limit,
                                                                                         ranges.grid_limit)
        elif isinstance(t, A.RandomBrightnessContrast):
            assert t.p == ranges.brightness_contrast_p and t.brightness_by_max and not t.ensure_safe_range
            assert tuple(t.brightness_limit) == ranges.brightness and tuple(t.contrast_limit) == ranges.contrast
        elif isinstance(t, A.RandomGamma):
            assert t.p == ranges.gamma_p and tuple(g / 100 for g in t.gamma_limit) == ranges.gamma
        elif isinstance(t, A.GaussNoise):
            assert t.p == ranges.noise_p and tuple(t.std_range) == ranges.noise_std
            assert t.per_channel and tuple(t.mean_range) == (0, 0)
        elif not isinstance(t, A.Resize):
            raise AssertionError(f"no batched counterpart checked for {t!r}")
        found.add(type(t).__name__)
    assert ranges.blur_p == 0.0 and len(found) >= 4


@pytest.mark.parametrize("kwargs", [dict(hflip_p=1.5), dict(scale=(0.0, 1.0)), dict(rotate=(10, -10)),
                                    dict(shear=(-90, 0)), dict(elastic_p=0.6, grid_p=0.6), dict(gamma=(0, 1)),
                                    dict(grid_limit=1.0), dict(noise_std=(-0.1, 0.1))])
def test_bad_ranges(kwargs):
    with pytest.raises(ConfigError):
        AugmentRanges(**kwargs)


# --- masks and identity ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("ranges", [preset_ranges(p) for p in BATCH_PRESETS] + [EXTREME],
                         ids=[*BATCH_PRESETS, "extreme"])
def test_masks_stay_binary_and_images_in_range(ranges):
    images, masks = synthetic_batch(8, 48)
    for step in range(3):
        out, out_masks = BatchAugment(ranges)(images, masks, augment_generator(0, 0, step))
        assert out.shape == images.shape and out_masks.shape == masks.shape and out.dtype == images.dtype
        assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
        assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_identity_is_exact():
    images, masks = synthetic_batch(4, 40)
    out, out_masks = BatchAugment(AugmentRanges())(images, masks, augment_generator(0, 0, 0))
    assert out is images and out_masks is masks  # 'none': no work at all
    out, out_masks = BatchAugment(preset_ranges("heavy")).apply(images, masks, AugmentParams.identity(4))
    assert torch.equal(out, images) and torch.equal(out_masks, masks)
    # Identity samples stay exact next to warped ones (40 is not a power of two).
    params = forced(4, rotate=[0.0, 10.0, 0.0, 0.0], distortion=[0, 0, 2, 0])
    out, out_masks = BatchAugment(AugmentRanges()).apply(images, masks, params)
    assert torch.equal(out[[0, 3]], images[[0, 3]]) and torch.equal(out_masks[[0, 3]], masks[[0, 3]])
    assert not torch.equal(out[1], images[1]) and not torch.equal(out[2], images[2])


# --- geometry against albumentations ---------------------------------------------------------------------------

@pytest.mark.parametrize("size", [(40, 56), (32, 32)])
@pytest.mark.parametrize("flips", [(True, False), (False, True), (True, True)])
def test_flips_match_albumentations_exactly(size, flips):
    image, mask = uint8_sample(64)
    image, mask = np.ascontiguousarray(image[:size[0], :size[1]]), np.ascontiguousarray(mask[:size[0], :size[1]])
    steps = [A.HorizontalFlip(p=1)] * flips[0] + [A.VerticalFlip(p=1)] * flips[1]
    ref = A.Compose(steps)(image=image, mask=mask)
    out, out_mask = to_numpy(*BatchAugment(AugmentRanges()).apply(*to_batch(image, mask),
                                                                 forced(hflip=flips[0], vflip=flips[1])))
    np.testing.assert_array_equal(out, ref["image"].astype(np.float32) / 255)
    np.testing.assert_array_equal(out_mask, ref["mask"])


def affine(**kwargs) -> A.Affine:
    return A.Affine(p=1, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_NEAREST,
                    border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, **kwargs)


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("degrees,hflip,vflip", [(90, False, False), (-90, False, False), (180, False, False),
                                                 (90, True, False), (270, False, True)])
def test_right_angle_rotations_match_albumentations_exactly(size, degrees, hflip, vflip):
    image, mask = uint8_sample(size, seed=1)
    steps = [A.HorizontalFlip(p=1)] * hflip + [A.VerticalFlip(p=1)] * vflip + [affine(rotate=(degrees, degrees))]
    ref = A.Compose(steps)(image=image, mask=mask)
    if not (hflip or vflip):  # albumentations' positive angle turns counter-clockwise, like np.rot90
        np.testing.assert_array_equal(ref["mask"], np.rot90(mask, degrees // 90))
    params = forced(rotate=float(degrees), hflip=hflip, vflip=vflip)
    out, out_mask = to_numpy(*BatchAugment(AugmentRanges()).apply(*to_batch(image, mask), params))
    np.testing.assert_array_equal(out, ref["image"].astype(np.float32) / 255)
    np.testing.assert_array_equal(out_mask, ref["mask"])


@pytest.mark.parametrize("fields,kwargs", [
    (dict(rotate=23.0), dict(rotate=(23, 23))),
    (dict(scale=[1.2, 0.85]), dict(scale={"x": (1.2, 1.2), "y": (0.85, 0.85)})),
    (dict(translate=[0.1, -0.2]), dict(translate_percent={"x": (0.1, 0.1), "y": (-0.2, -0.2)})),
    (dict(shear=[8.0, -5.0]), dict(shear={"x": (8, 8), "y": (-5, -5)})),
    (dict(rotate=-20.0, scale=[0.9, 1.1], translate=[0.05, 0.1], shear=[5.0, 3.0], hflip=True),
     dict(rotate=(-20, -20), scale={"x": (0.9, 0.9), "y": (1.1, 1.1)},
          translate_percent={"x": (0.05, 0.05), "y": (0.1, 0.1)}, shear={"x": (5, 5), "y": (3, 3)})),
])
def test_affine_matches_albumentations_up_to_rounding(fields, kwargs):
    yy, xx = np.mgrid[0:48, 0:56]  # a smooth image: differences are rounding only
    image = np.clip(127 + 60 * np.sin(xx / 5) + 60 * np.cos(yy / 7), 0, 255).astype(np.uint8)
    image = np.stack([image, image[::-1], 255 - image], -1)
    mask = (image[:, :, 0] > 150).astype(np.uint8)
    steps = [A.HorizontalFlip(p=1)] * bool(fields.get("hflip")) + [affine(**kwargs)]
    ref = A.Compose(steps)(image=image, mask=mask)
    out, out_mask = to_numpy(*BatchAugment(AugmentRanges()).apply(*to_batch(image, mask), forced(**fields)))
    assert np.abs(out - ref["image"] / 255).max() <= 1 / 255  # uint8 rounding and cv2's 5-bit weights
    assert (out_mask != ref["mask"]).mean() < 0.01  # nearest-neighbour ties on a few edge pixels


def test_image_and_mask_move_together():
    """A mask thresholded from the image before augmenting matches the augmented image thresholded after."""
    images, _ = synthetic_batch(12, 64)
    masks = (images[:, 1:2] > 0.45).float()  # FLAIR-bright tissue and lesions
    out, out_masks = BatchAugment(GEOMETRY_ONLY)(images, masks, augment_generator(3, 1, 4))
    moved = (out_masks != masks).flatten(1).any(1)
    assert moved.sum() >= 8  # most samples really moved
    disagree = (out[:, 1:2] > 0.45).float() != out_masks
    near_edge = F.max_pool2d(out_masks, 5, 1, 2) != -F.max_pool2d(-out_masks, 5, 1, 2)
    assert not (disagree & ~near_edge).any()
    assert disagree.float().mean() < 0.02


def test_grid_distortion_keeps_the_image_edges():
    images, masks = synthetic_batch(2, 48)
    params = forced(2, distortion=[2, 2])
    params.grid_steps = torch.tensor([[[1.5, 0.6, 1.2, 0.8, 1.0]] * 2, [[0.7, 1.3, 1.0, 1.0, 0.9]] * 2],
                                     dtype=torch.float64)
    out, out_masks = BatchAugment(preset_ranges("heavy")).apply(images, masks, params)
    assert not torch.equal(out, images)
    for edge in (np.s_[:, :, 0, :], np.s_[:, :, -1, :], np.s_[:, :, :, 0], np.s_[:, :, :, -1]):
        torch.testing.assert_close(out[edge], images[edge], atol=0.06, rtol=0)  # edges stay; only slide along


# --- intensity ------------------------------------------------------------------------------------------------

def test_brightness_contrast_and_gamma_follow_albumentations():
    image = np.random.default_rng(0).random((16, 16, 3), dtype=np.float32)
    batch = torch.from_numpy(image).permute(2, 0, 1)[None]
    ref = A.RandomBrightnessContrast(brightness_limit=(-0.1, -0.1), contrast_limit=(0.3, 0.3), p=1)(image=image)
    out, _ = BatchAugment(AugmentRanges()).apply(batch, torch.zeros(1, 1, 16, 16), forced(brightness=-0.1,
                                                                                         contrast=0.3))
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref["image"], atol=1e-6)
    ref = A.RandomGamma(gamma_limit=(80, 80), p=1)(image=image)
    out, _ = BatchAugment(AugmentRanges()).apply(batch, torch.zeros(1, 1, 16, 16), forced(gamma=0.8))
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref["image"], atol=1e-6)


def test_noise_and_blur():
    grey = torch.full((2, 3, 64, 64), 0.5)
    out, _ = BatchAugment(AugmentRanges()).apply(grey, torch.zeros(2, 1, 64, 64), forced(2, noise_std=[0.05, 0.0]))
    assert abs((out[0] - 0.5).std().item() - 0.05) < 0.003 and torch.equal(out[1], grey[1])
    images, masks = synthetic_batch(2, 48)
    out, _ = BatchAugment(AugmentRanges()).apply(images, masks, forced(2, blur_sigma=[1.5, 0.0]))
    assert out[0].diff(dim=-1).abs().mean() < 0.7 * images[0].diff(dim=-1).abs().mean()
    assert torch.equal(out[1], images[1])
    flat, _ = BatchAugment(AugmentRanges()).apply(grey, torch.zeros(2, 1, 64, 64), forced(2, blur_sigma=[2.0, 0.7]))
    torch.testing.assert_close(flat, grey)


# --- randomness -----------------------------------------------------------------------------------------------

def test_parameters_differ_within_a_batch():
    always = dataclasses.replace(EXTREME, hflip_p=0.0, vflip_p=0.0, noise_p=0.0, blur_p=0.0)
    params = BatchAugment(always).sample_params(8, augment_generator(0, 0, 0))
    for values in (params.rotate, params.scale[:, 0], params.translate[:, 1], params.brightness, params.gamma):
        assert len(set(values.tolist())) == 8
    image, mask = synthetic_batch(1, 32)
    out, _ = BatchAugment(always)(image.expand(8, -1, -1, -1), mask.expand(8, -1, -1, -1),
                                  augment_generator(0, 0, 0))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_same_seed_same_output_and_other_coordinates_differ():
    images, masks = synthetic_batch(8, 32)
    augment = BatchAugment(preset_ranges("heavy"))
    first = augment(images, masks, augment_generator(7, 2, 5, rank=1))
    again = augment(images, masks, augment_generator(7, 2, 5, rank=1))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in [(8, 2, 5, 1), (7, 3, 5, 1), (7, 2, 6, 1), (7, 2, 5, 0), (7, 5, 2, 1)]:
        assert not torch.equal(augment(images, masks, augment_generator(*other))[0], first[0]), other
    with pytest.raises(TypeError):
        augment_generator(0, 1.5, 0)


def test_nine_channel_input_moves_every_channel_alike():
    images, masks = synthetic_batch(6, 32, channels=9)
    ranges = dataclasses.replace(GEOMETRY_ONLY, brightness_contrast_p=1.0, gamma_p=1.0)
    out, out_masks = BatchAugment(ranges)(images, masks, augment_generator(1, 1, 1))
    assert out.shape == (6, 9, 32, 32) and not torch.equal(out, images)
    assert torch.equal(out[:, :3], out[:, 3:6]) and torch.equal(out[:, :3], out[:, 6:])
    assert set(out_masks.unique().tolist()) <= {0.0, 1.0}
    noisy, _ = BatchAugment(preset_ranges("heavy"))(images, masks, augment_generator(1, 1, 1))
    assert noisy.shape == (6, 9, 32, 32)


def test_bad_shapes():
    augment = BatchAugment(preset_ranges("light"))
    with pytest.raises(ValueError):
        augment(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8), augment_generator(0, 0, 0))
    with pytest.raises(ValueError):
        augment.apply(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8), AugmentParams.identity(3))
