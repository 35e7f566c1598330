"""Sliding-window inference: stitching, window placement, Gaussian weights, mirroring, MONAI as a peer, bad input."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from segkit.errors import ConfigError
from segkit.inference.sliding_window import gaussian_importance, sliding_window_logits, window_starts


def identity(batch: torch.Tensor) -> torch.Tensor:
    return batch


def conv_net(dims: int, in_channels: int = 2, classes: int = 3, kernel: int = 3, seed: int = 0) -> nn.Module:
    """Two 'same'-padded convolutions with a ReLU between: translation-equivariant, receptive radius kernel - 1."""
    conv = nn.Conv3d if dims == 3 else nn.Conv2d
    torch.manual_seed(seed)
    return nn.Sequential(conv(in_channels, 4, kernel, padding="same"), nn.ReLU(),
                         conv(4, classes, kernel, padding="same")).eval()


@pytest.mark.parametrize("spatial, patch, overlap", [
    ((35, 50, 36), (32, 32, 32), 0.5),      # hippocampus-sized, odd sizes, windows not on a regular grid
    ((20, 17, 9), (8, 8, 8), 0.25),
    ((12, 10, 6), (16, 16, 8), 0.5),        # smaller than the patch along every axis: padded, cropped back
    ((40, 7, 13), (16, 16, 16), 0.0),       # padded along two axes only, no overlap
    ((33, 47), (16, 16), 0.5),              # 2D
    ((9, 31), (12, 8), 0.75),
])
@pytest.mark.parametrize("gaussian", [False, True])
def test_identity_model_gives_back_the_image(spatial, patch, overlap, gaussian) -> None:
    # Integer values: with uniform weights the average of n equal copies is exact in float32.
    image = torch.randint(-50, 50, (2, *spatial), generator=torch.Generator().manual_seed(1)).float()
    out = sliding_window_logits(identity, image, patch, overlap=overlap, batch_size=3, gaussian=gaussian)
    assert out.dtype == torch.float32 and out.shape == image.shape
    if gaussian:  # a weighted average of equal values: exact up to float32 rounding
        torch.testing.assert_close(out, image, rtol=1e-6, atol=1e-5)
    else:
        assert torch.equal(out, image)


def test_batched_input_and_integer_images_are_accepted() -> None:
    image = torch.randint(0, 255, (1, 1, 30, 30), dtype=torch.uint8)
    out = sliding_window_logits(identity, image, (16, 16), gaussian=False)
    assert out.shape == (1, 30, 30) and torch.equal(out, image[0].float())


def test_window_starts_follow_the_evenly_spread_rule() -> None:
    # By hand: n = ceil((size - patch) / (patch * (1 - overlap))) + 1 windows, step (size - patch) / (n - 1).
    assert window_starts(50, 32, 0.5) == [0, 9, 18]
    assert window_starts(35, 32, 0.5) == [0, 3]
    assert window_starts(32, 32, 0.5) == [0]
    assert window_starts(160, 96, 0.5) == [0, 32, 64]
    assert window_starts(64, 32, 0.0) == [0, 32]
    assert window_starts(100, 10, 0.0) == list(range(0, 100, 10))
    assert window_starts(24, 16, 0.75) == [0, 4, 8]
    assert window_starts(15, 10, 0.9) == [0, 1, 2, 3, 4, 5]  # 1 - 0.9 rounds below 0.1: still 6 windows


def test_gaussian_importance_is_centred_normalised_and_never_zero() -> None:
    weights = gaussian_importance((9, 8, 7), 0.125)
    assert weights.shape == (9, 8, 7) and weights.max() == 1.0 and weights[4, 3:5, 3].min() == weights.max()
    for axis in range(3):
        assert torch.equal(weights, weights.flip(axis))
    # sigma = 0.125 * 9 along the first axis: exp(-d^2 / (2 sigma^2)) relative to the centre
    centre = weights[4, 3, 3]
    assert weights[0, 3, 3] / centre == pytest.approx(torch.exp(torch.tensor(-16 / (2 * 1.125 ** 2))).item(), rel=1e-5)
    tiny = gaussian_importance((16, 16), 0.01)  # underflows in float32 away from the centre
    assert tiny.min() > 0 and (tiny == tiny.min()).sum() > 100
    assert gaussian_importance((9, 8, 7), 0.125) is weights  # cached


def _safe_voxels(size: int, starts: list[int], patch: int, radius: int) -> torch.Tensor:
    """Voxels of an axis whose receptive field lies inside every window holding them (or beyond the volume)."""
    safe = torch.ones(size, dtype=torch.bool)
    for start in starts:
        for voxel in range(start, start + patch):
            near_start = start > 0 and voxel - radius < start
            near_end = start + patch < size and voxel + radius >= start + patch
            if near_start or near_end:
                safe[voxel] = False
    return safe


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_net_matches_the_whole_volume_away_from_window_borders(dims) -> None:
    net = conv_net(dims)
    spatial = (24, 20, 11)[:dims]
    image = torch.randn(2, *spatial, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = net(image[None])[0]
    # patch = the whole image: one window, the same computation (uniform weight 1: exact; Gaussian: w * x / w)
    assert torch.equal(sliding_window_logits(net, image, spatial, gaussian=False), whole)
    torch.testing.assert_close(sliding_window_logits(net, image, spatial), whole, rtol=1e-6, atol=1e-6)

    patch = (16, 12, 8)[:dims]
    starts = [[0, 8], [0, 4, 8], [0, 3]][:dims]  # by hand, overlap 0.5
    out = sliding_window_logits(net, image, patch, overlap=0.5, batch_size=2)
    masks = [_safe_voxels(s, st, p, radius=2) for s, st, p in zip(spatial, starts, patch)]
    safe = masks[0]
    for mask in masks[1:]:
        safe = safe[..., None] & mask
    assert safe.sum() > 0.2 * safe.numel()
    torch.testing.assert_close(out[:, safe], whole[:, safe], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(out, whole, atol=1e-3)  # the unsafe voxels do differ: the check can fail


def test_pointwise_net_matches_the_whole_volume_everywhere() -> None:
    net = conv_net(3, kernel=1)
    image = torch.randn(2, 19, 26, 13, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = net(image[None])[0]
    out = sliding_window_logits(net, image, (8, 8, 8), overlap=0.5, batch_size=5, mirror_axes=(0, 2))
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)


def test_mirroring_averages_the_flipped_passes() -> None:
    net = conv_net(3, seed=4)
    image = torch.randn(2, 12, 10, 8, generator=torch.Generator().manual_seed(5))
    plain = sliding_window_logits(net, image, (12, 10, 8))
    mirrored = sliding_window_logits(net, image, (12, 10, 8), mirror_axes=(0, 2))
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the net is not flip-symmetric
    expected = torch.zeros_like(plain)
    with torch.no_grad():
        for dims in [(), (1,), (3,), (1, 3)]:
            expected += torch.flip(net(torch.flip(image[None], [d + 1 for d in dims])), [d + 1 for d in dims])[0] / 4
    torch.testing.assert_close(mirrored, expected, rtol=1e-5, atol=1e-5)


def test_mirroring_a_flip_symmetric_net_changes_nothing() -> None:
    net = conv_net(3, seed=6)
    with torch.no_grad():  # symmetric kernels along every axis: flipping commutes with the net
        for layer in (net[0], net[2]):
            flips = itertools.chain.from_iterable(itertools.combinations((2, 3, 4), r) for r in range(4))
            layer.weight.copy_(torch.stack([torch.flip(layer.weight, axes) for axes in flips]).mean(0))
    image = torch.randn(2, 21, 17, 10, generator=torch.Generator().manual_seed(7))
    plain = sliding_window_logits(net, image, (8, 8, 8), overlap=0.5)
    mirrored = sliding_window_logits(net, image, (8, 8, 8), overlap=0.5, mirror_axes=(0, 1, 2))
    torch.testing.assert_close(mirrored, plain, rtol=1e-5, atol=1e-5)


def test_progress_reports_every_batch() -> None:
    calls: list[tuple[int, int]] = []
    sliding_window_logits(identity, torch.zeros(1, 24, 24), (8, 8), overlap=0.0, batch_size=4,
                          progress=lambda done, total: calls.append((done, total)))
    assert calls == [(4, 9), (8, 9), (9, 9)]


# --- MONAI as a peer ----------------------------------------------------------------------------------------
# Where the two differ: (1) window placement: MONAI steps by int(patch * (1 - overlap)) and moves the last window
# back to the end; segkit spreads the windows evenly (nnU-Net's rule). Both give the same windows when
# (size - patch) is a multiple of that step. (2) Gaussian weights: MONAI raises every weight below 1e-3 to 1e-3
# (the window's outer shell and corners); segkit keeps them (only zeros are raised), so where several windows
# overlap near their borders MONAI weighs them about equally and segkit still favours the nearer centre. This,
# not the placement, is most of the difference (measured on the random nets below: max |difference| 0.28 with
# MONAI's weights, 0.02 with segkit's weights and MONAI's placement, for logits of about +-0.9).
# Both pad a too-small image with zeros, half before and the rest after.

def _monai(net, image, patch, overlap, mode="gaussian", **options) -> torch.Tensor:
    inferers = pytest.importorskip("monai.inferers", reason="MONAI (a test extra) is not installed")
    with torch.no_grad():
        return inferers.sliding_window_inference(image[None], patch, 3, net, overlap=overlap, mode=mode,
                                                 sigma_scale=0.125, **options)[0]


def test_agrees_with_monai_when_the_windows_coincide() -> None:
    net = conv_net(3, seed=8)
    image = torch.randn(2, 32, 24, 18, generator=torch.Generator().manual_seed(9))
    patch = (16, 16, 12)  # steps 8, 8, 6 divide 16, 8, 6: both place windows at 0,8,16 / 0,8 / 0,6
    uniform = sliding_window_logits(net, image, patch, overlap=0.5, batch_size=3, gaussian=False)
    torch.testing.assert_close(uniform, _monai(net, image, patch, 0.5, mode="constant"), rtol=1e-5, atol=1e-5)
    ours = sliding_window_logits(net, image, patch, overlap=0.5, batch_size=3)
    same_weights = _monai(net, image, patch, 0.5, roi_weight_map=gaussian_importance(patch))
    torch.testing.assert_close(ours, same_weights, rtol=1e-5, atol=1e-5)
    # MONAI's own Gaussian (the 1e-3 floor) moves the logits where windows overlap near their borders;
    # measured: mean |difference| 0.007, argmax agreement 0.979 (a random net: small margins between classes)
    theirs = _monai(net, image, patch, 0.5)
    assert (ours - theirs).abs().mean() < 0.02
    assert (ours.argmax(0) == theirs.argmax(0)).float().mean() > 0.95


def test_agrees_with_monai_on_an_odd_volume_with_different_windows_and_padding() -> None:
    image = torch.randn(2, 35, 50, 13, generator=torch.Generator().manual_seed(11))
    patch = (16, 16, 16)  # axis 2 is padded 13 -> 16 by both; MONAI's windows differ along axes 0 and 1
    pointwise = conv_net(3, kernel=1, seed=10)  # every window agrees: any placement, same logits, if aligned
    torch.testing.assert_close(sliding_window_logits(pointwise, image, patch),
                               _monai(pointwise, image, patch, 0.5), rtol=1e-5, atol=1e-5)
    net = conv_net(3, seed=10)
    ours = sliding_window_logits(net, image, patch, overlap=0.5)
    # placement alone (MONAI with segkit's weights), measured: max |difference| 0.020, argmax agreement 0.999
    placed = _monai(net, image, patch, 0.5, roi_weight_map=gaussian_importance(patch))
    assert (ours - placed).abs().max() < 0.05
    assert (ours.argmax(0) == placed.argmax(0)).float().mean() > 0.99
    # and MONAI's own weights too, measured: mean |difference| 0.007, argmax agreement 0.981
    theirs = _monai(net, image, patch, 0.5)
    assert (ours - theirs).abs().mean() < 0.02
    assert (ours.argmax(0) == theirs.argmax(0)).float().mean() > 0.95


# --- bad input ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, named", [
    ({"patch_size": (8, 8, 8, 8)}, "(8, 8, 8, 8)"),
    ({"patch_size": (8,)}, "(8,)"),
    ({"patch_size": (8, 0, 8)}, "(8, 0, 8)"),
    ({"patch_size": (8, 8.5, 8)}, "8.5"),
    ({"patch_size": 8}, "8"),
    ({"patch_size": (8, 8)}, "(2, 10, 10, 10)"),        # a 2D patch for a 3D image
    ({"overlap": 1.0}, "1.0"),
    ({"overlap": -0.1}, "-0.1"),
    ({"overlap": "half"}, "'half'"),
    ({"batch_size": 0}, "0"),
    ({"batch_size": 2.0}, "2.0"),
    ({"sigma_scale": 0}, "0"),
    ({"mirror_axes": (0, 3)}, "(0, 3)"),
])
def test_bad_arguments_are_config_errors_naming_the_value(options, named) -> None:
    arguments = {"patch_size": (8, 8, 8), **options}
    with pytest.raises(ConfigError) as error:
        sliding_window_logits(identity, torch.zeros(2, 10, 10, 10), arguments.pop("patch_size"), **arguments)
    assert named in str(error.value)


@pytest.mark.parametrize("shape", [(10, 10, 10), (2, 2, 10, 10, 10), (1, 1, 1, 10, 10, 10)])
def test_images_with_the_wrong_number_of_dims_are_config_errors(shape) -> None:
    with pytest.raises(ConfigError, match=r"image has shape \(" + ", ".join(map(str, shape)) + r"\)"):
        sliding_window_logits(identity, torch.zeros(shape), (8, 8, 8))


def test_a_model_that_changes_the_window_size_is_a_config_error() -> None:
    net = nn.Conv3d(1, 2, 3)  # no padding: 8 -> 6
    with pytest.raises(ConfigError, match=r"returned \(1, 2, 6, 6, 6\).*patch_size the model keeps"):
        sliding_window_logits(net, torch.zeros(1, 8, 8, 8), (8, 8, 8), batch_size=1)


def test_an_image_that_is_not_a_tensor_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="image must be a torch.Tensor, got ndarray"):
        sliding_window_logits(identity, torch.zeros(1, 8, 8).numpy(), (8, 8))


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_slabs_put_together_are_the_whole_logits_and_arrive_before_the_last_window(axis) -> None:
    """window_slabs yields each part of the axis once, in order, equal to the whole-image logits; the first slab
    comes while windows are still to run (streamed, not computed whole and cut up)."""
    from segkit.inference.sliding_window import sliding_window_labels, window_slabs

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = torch.randn(2, 40, 26, 7)  # the last axis is shorter than the patch: padded and cropped
    patch = (16, 12, 8)
    whole = sliding_window_logits(net, image, patch, overlap=0.5, batch_size=3)
    seen: list[int] = []
    slabs = []
    for first, last, logits in window_slabs(net, image, patch, overlap=0.5, batch_size=3, axis=axis,
                                            progress=lambda done, total: seen.append(done)):
        slabs.append((first, last, logits, seen[-1] if seen else 0))
    assert [s[0] for s in slabs] == [0] + [s[1] for s in slabs[:-1]] and slabs[-1][1] == image.shape[1 + axis]
    torch.testing.assert_close(torch.cat([s[2] for s in slabs], axis + 1), whole, rtol=1e-5, atol=1e-5)
    if axis != 2:  # along the padded axis one window row covers everything
        assert slabs[0][3] < seen[-1]
    labels = sliding_window_labels(net, image, patch, overlap=0.5, batch_size=3)
    assert labels.dtype == torch.uint8 and torch.equal(labels, whole.argmax(0).to(torch.uint8))


def test_slab_axis_is_the_one_whose_patch_is_the_smallest_share() -> None:
    from segkit.inference.sliding_window import slab_axis

    assert slab_axis((512, 512, 400), (128, 128, 64)) == 2
    assert slab_axis((100, 300, 300), (64, 64, 64)) == 1
    assert slab_axis((20, 20), (32, 32)) == 0  # both padded: the first
