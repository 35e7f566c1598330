"""Batched 3D augmentation: geometry checked against torch's exact flips and right-angle rotations."""

from __future__ import annotations

import pytest
import torch
from segkit.data.augment3d import Augment3DSettings, augment_volumes
from segkit.data.batch_augment import augment_generator
from segkit.errors import ConfigError

NONE = Augment3DSettings.none()


def only(**changes: object) -> Augment3DSettings:
    """No augmentation but ``changes``."""
    values = {**{k: getattr(NONE, k) for k in NONE.__dataclass_fields__}, **changes}
    return Augment3DSettings(**values)


def batch(n: int = 4, size: tuple[int, int, int] = (12, 16, 10), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 2, *size, generator=g)
    labels = torch.randint(0, 3, (n, 1, *size), generator=g).float()
    return images, labels


def ball(n: int = 24, radius: float = 6.0) -> torch.Tensor:
    axis = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
    z, y, x = torch.meshgrid(axis, axis, axis, indexing="ij")
    return ((x ** 2 + y ** 2 + z ** 2).sqrt() < radius).float()[None, None]


def test_identity_settings_return_the_batch_untouched() -> None:
    images, labels = batch()
    out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 0), NONE)
    assert out is images and out_labels is labels
    rotate_zero = only(rotate_p=1.0, rotate=((0.0, 0.0),) * 3, scale_p=1.0, scale=(1.0, 1.0))
    out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 0), rotate_zero)
    assert torch.equal(out, images) and torch.equal(out_labels, labels)


def test_every_augmentation_keeps_shapes_dtypes_and_label_values() -> None:
    images, labels = batch(n=6)
    everything = Augment3DSettings(rotate_p=1.0, scale_p=1.0, brightness_p=1.0, contrast_p=1.0, gamma_p=1.0,
                                   noise_p=1.0, elastic_p=0.5)
    out, out_labels = augment_volumes(images, labels, augment_generator(1, 0, 0), everything)
    assert out.shape == images.shape and out.dtype == images.dtype and torch.isfinite(out).all()
    assert out_labels.shape == labels.shape and set(out_labels.unique().tolist()) <= {0.0, 1.0, 2.0}
    as_uint8 = labels[:, 0].to(torch.uint8)  # (N, D, H, W) integer labels come back the same way
    _, back = augment_volumes(images, as_uint8, augment_generator(1, 0, 0), everything)
    assert back.dtype == torch.uint8 and back.shape == as_uint8.shape and torch.equal(back.float(), out_labels[:, 0])


def test_mirroring_flips_image_and_label_together_per_sample() -> None:
    images, labels = batch(n=8)
    for axis in range(3):
        mirror = tuple(1.0 if a == axis else 0.0 for a in range(3))
        out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 0), only(mirror_p=mirror))
        assert torch.equal(out, images.flip(2 + axis)) and torch.equal(out_labels, labels.flip(2 + axis))
    out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 1), only(mirror_p=(0.5, 0.0, 0.0)))
    flipped = [torch.equal(out[k], images[k].flip(1)) for k in range(8)]
    assert 0 < sum(flipped) < 8
    for k in range(8):
        same = images[k].flip(1) if flipped[k] else images[k]
        assert torch.equal(out[k], same) and torch.equal(out_labels[k], labels[k].flip(1) if flipped[k] else labels[k])


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_a_right_angle_rotation_about_each_axis_is_torch_rot90(axis: int) -> None:
    images, labels = batch(n=2, size=(10, 10, 10))
    rotate = tuple((90.0, 90.0) if a == axis else (0.0, 0.0) for a in range(3))
    out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 0), only(rotate_p=1.0, rotate=rotate))
    plane = tuple(2 + a for a in range(3) if a != axis)
    errors = {k: (out - torch.rot90(images, k, plane)).abs().max().item() for k in (1, -1)}
    k = min(errors, key=errors.get)
    assert errors[k] < 1e-4 and torch.equal(out_labels, torch.rot90(labels, k, plane))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_an_oblique_rotation_of_a_non_cubic_patch_turns_a_point_about_the_centre_in_voxel_units(axis: int) -> None:
    size = (16, 24, 32)
    centre = torch.tensor([(n - 1) / 2 for n in size])
    offset = torch.tensor([4.0, -3.0, 5.0])
    grids = torch.meshgrid(*[torch.arange(n, dtype=torch.float32) for n in size], indexing="ij")
    blob = torch.exp(-sum((g - c) ** 2 for g, c in zip(grids, centre + offset, strict=True)) / 2.0)[None, None]
    rotate = tuple((30.0, 30.0) if a == axis else (0.0, 0.0) for a in range(3))
    out, _ = augment_volumes(blob, torch.zeros_like(blob), augment_generator(0, 0, 0),
                             only(rotate_p=1.0, rotate=rotate, scale_p=1.0, scale=(1.2, 1.2)))
    weights = out[0, 0].clamp_min(0)
    moved = torch.stack([(g * weights).sum() / weights.sum() for g in grids]) - centre
    plane = [a for a in range(3) if a != axis]
    assert moved[axis].item() == pytest.approx(offset[axis].item() * 1.2, abs=0.15)  # the axis only scales
    before, after = offset[plane], moved[plane]
    assert after.norm().item() == pytest.approx(before.norm().item() * 1.2, abs=0.15)  # no shear, no stretch
    turned = torch.rad2deg(torch.atan2(after[1], after[0]) - torch.atan2(before[1], before[0])).item()
    assert min(abs((turned - sign * 30.0 + 180.0) % 360.0 - 180.0) for sign in (1, -1)) < 1.0


def test_scaling_zooms_about_the_centre() -> None:
    labels = ball()
    images = labels.clone()
    _, zoomed = augment_volumes(images, labels, augment_generator(0, 0, 0), only(scale_p=1.0, scale=(1.25, 1.25)))
    assert zoomed.sum() / labels.sum() == pytest.approx(1.25 ** 3, rel=0.15)
    centre = (zoomed[0, 0].nonzero().float().mean(0) - 11.5).abs()
    assert (centre < 0.5).all()


def test_intensity_changes_touch_images_only_and_follow_their_rules() -> None:
    images, labels = batch()
    out, out_labels = augment_volumes(images, labels, augment_generator(0, 0, 0),
                                      only(brightness_p=1.0, brightness=(1.2, 1.2)))
    assert torch.allclose(out, images * 1.2) and out_labels is labels
    out, _ = augment_volumes(images, labels, augment_generator(0, 0, 0), only(contrast_p=1.0, contrast=(1.5, 1.5)))
    low, high = images.flatten(2).amin(-1), images.flatten(2).amax(-1)
    assert (out.flatten(2).amin(-1) >= low - 1e-6).all() and (out.flatten(2).amax(-1) <= high + 1e-6).all()
    assert not torch.equal(out, images)
    out, _ = augment_volumes(images, labels, augment_generator(0, 0, 0), only(gamma_p=1.0, gamma=(1.4, 1.4)))
    assert torch.allclose(out.flatten(2).mean(-1), images.flatten(2).mean(-1), atol=1e-4)
    assert torch.allclose(out.flatten(2).std(-1), images.flatten(2).std(-1), atol=1e-4)
    assert not torch.allclose(out, images, atol=1e-2)
    out, _ = augment_volumes(images, labels, augment_generator(0, 0, 0), only(noise_p=1.0, noise_std=(0.5, 0.5)))
    assert (out - images).std().item() == pytest.approx(0.5, rel=0.05)


def test_the_same_generator_seed_augments_the_same_way() -> None:
    images, labels = batch()
    settings = Augment3DSettings(elastic_p=0.5, noise_p=0.5)
    first = augment_volumes(images, labels, augment_generator(3, 2, 1), settings)
    again = augment_volumes(images, labels, augment_generator(3, 2, 1), settings)
    other = augment_volumes(images, labels, augment_generator(3, 2, 2), settings)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_elastic_deformation_moves_voxels_smoothly_and_keeps_labels() -> None:
    labels = ball()
    _, out_labels = augment_volumes(labels.clone(), labels, augment_generator(0, 0, 0),
                                             only(elastic_p=1.0, elastic_magnitude=3.0, elastic_spacing=8.0))
    assert not torch.equal(out_labels, labels) and set(out_labels.unique().tolist()) <= {0.0, 1.0}
    assert out_labels.sum() / labels.sum() == pytest.approx(1.0, rel=0.3)


def test_bad_inputs_and_settings_are_refused() -> None:
    images, labels = batch()
    g = augment_generator(0, 0, 0)
    with pytest.raises(ValueError, match="expected float images"):
        augment_volumes(images[:, 0], labels, g, NONE)
    with pytest.raises(ValueError, match="do not fit"):
        augment_volumes(images, labels[:, :, :-1], g, NONE)
    with pytest.raises(ValueError, match="do not fit"):
        augment_volumes(images, labels.repeat(1, 2, 1, 1, 1), g, NONE)
    with pytest.raises(ConfigError, match="rotate_p"):
        Augment3DSettings(rotate_p=1.5)
    with pytest.raises(ConfigError, match="scale"):
        Augment3DSettings(scale=(0.0, 1.2))
    with pytest.raises(ConfigError, match="mirror_p"):
        Augment3DSettings(mirror_p=(0.5, 0.5))
    with pytest.raises(ConfigError, match="gamma"):
        Augment3DSettings(gamma=(1.5, 0.7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")
def test_on_a_gpu_the_batch_stays_there_and_matches_the_cpu_geometry() -> None:
    images, labels = batch()
    settings = only(rotate_p=1.0, scale_p=1.0, mirror_p=(0.5, 0.5, 0.5))
    cpu = augment_volumes(images, labels, augment_generator(0, 0, 0), settings)
    gpu = augment_volumes(images.cuda(), labels.cuda(), augment_generator(0, 0, 0), settings)
    assert gpu[0].device.type == "cuda" and torch.allclose(gpu[0].cpu(), cpu[0], atol=1e-4)
    assert (gpu[1].cpu() != cpu[1]).float().mean() < 0.01  # nearest may round a few boundary voxels differently
