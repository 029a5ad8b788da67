"""Batch augmentations: each operation against torchvision's reference, seeding, devices."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from icbpl.features.augment import BatchAugment, _gaussian_blur, resize_batch

OFF = {"flip_p": 0.0, "jitter_p": 0.0, "grayscale_p": 0.0, "blur_p": 0.0}


def _images(n: int = 6, size: int = 20, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_shapes_range_and_dtype() -> None:
    out = BatchAugment(12)(_images(), torch.Generator().manual_seed(0))
    assert out.shape == (6, 3, 12, 12) and out.dtype == torch.float32
    assert out.min() >= 0.0 and out.max() <= 1.0 and torch.isfinite(out).all()
    assert BatchAugment(12)(_images(0)).shape == (0, 3, 12, 12)


def test_uint8_input_is_scaled() -> None:
    x = (_images() * 255).round().to(torch.uint8)
    aug = BatchAugment(20, scale=(1.0, 1.0), ratio=(1.0, 1.0), **OFF)
    torch.testing.assert_close(aug(x), x.float() / 255, atol=1e-6, rtol=0)


def test_same_seed_same_views_other_seed_other_views() -> None:
    aug, x = BatchAugment(16), _images()
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert (a - c).abs().max() > 0.05


def test_parameters_are_per_sample() -> None:
    x = _images(1).expand(8, -1, -1, -1)
    out = BatchAugment(16)(x, torch.Generator().manual_seed(0))
    assert len({tuple(o.flatten()[:50].tolist()) for o in out}) == 8


def test_identity_when_everything_is_off() -> None:
    x = _images()
    out = BatchAugment(20, scale=(1.0, 1.0), ratio=(1.0, 1.0), **OFF)(x)
    torch.testing.assert_close(out, x, atol=1e-6, rtol=0)


def test_flip_only() -> None:
    x = _images()
    aug = BatchAugment(20, scale=(1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "flip_p": 1.0})
    torch.testing.assert_close(aug(x), x.flip(-1), atol=1e-6, rtol=0)


def test_grayscale_only_matches_torchvision() -> None:
    x = _images()
    aug = BatchAugment(20, scale=(1.0, 1.0), ratio=(1.0, 1.0), **{**OFF, "grayscale_p": 1.0})
    ref = TF.rgb_to_grayscale(x, num_output_channels=3)
    torch.testing.assert_close(aug(x), ref, atol=1e-5, rtol=0)


def test_crop_of_a_known_box_is_the_subimage_and_downscale_is_antialiased() -> None:
    x = _images(2, 16)
    aug = BatchAugment(8)
    boxes = torch.tensor([[0.0, 4.0, 2.0, 12.0, 10.0], [1.0, 0.0, 0.0, 16.0, 16.0]])
    out = aug._crop_flip(x, boxes, torch.tensor([False, True]))
    torch.testing.assert_close(out[0], x[0, :, 2:10, 4:12], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1], F.avg_pool2d(x[1:2], 2)[0].flip(-1), atol=1e-6, rtol=0)


def test_random_crop_boxes_stay_inside_and_follow_scale() -> None:
    aug = BatchAugment(8, scale=(0.3, 0.6))
    p = aug._sample(500, 20, 30, torch.Generator().manual_seed(0), torch.device("cpu"))
    _, x0, y0, x1, y1 = p["boxes"].T
    assert (
        (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 30 + 1e-4).all() and (y1 <= 20 + 1e-4).all()
    )
    area = (x1 - x0) * (y1 - y0) / 600
    assert area.min() >= 0.3 - 1e-4 and area.max() <= 0.6 + 1e-4
    assert 0.4 < p["flip"].float().mean() < 0.6
    assert 0.7 < (p["factors"][:, 0] != 1).float().mean() < 0.9


@pytest.mark.parametrize(
    ("op", "factor", "reference"),
    [
        (0, 1.3, TF.adjust_brightness),
        (1, 0.7, TF.adjust_contrast),
        (2, 1.4, TF.adjust_saturation),
        (3, 0.08, TF.adjust_hue),
        (3, -0.1, TF.adjust_hue),
    ],
)
def test_jitter_operations_match_torchvision(op: int, factor: float, reference: object) -> None:
    x = _images(3)
    out = BatchAugment._jitter_op(op, x, torch.full((3,), factor))
    ref = torch.stack([reference(im, factor) for im in x])  # type: ignore[operator]
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=0)


def test_jitter_factors_apply_per_sample() -> None:
    x = _images(2)
    out = BatchAugment._jitter_op(0, x, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(out[0], TF.adjust_brightness(x[0], 0.5))
    torch.testing.assert_close(out[1], TF.adjust_brightness(x[1], 1.5))


def test_hue_shifts_only_the_images_with_a_nonzero_factor() -> None:
    x = _images(4)
    x[1] = x[1, :1].expand(3, -1, -1)  # a grey image: its hue is undefined, it must stay grey
    factors = torch.tensor([0.0, 0.2, 0.08, -0.3])
    out = BatchAugment._jitter_op(3, x, factors)
    assert torch.equal(out[0], x[0])  # untouched, bit for bit
    for i in (1, 2, 3):
        ref = TF.adjust_hue(x[i], float(factors[i]))
        torch.testing.assert_close(out[i], ref, atol=2e-5, rtol=0)
    assert torch.equal(x, _images(4).index_copy(0, torch.tensor([1]), x[1:2]))  # input kept


def test_blur_matches_torchvision_per_sigma() -> None:
    x = _images(2, 24)
    sigmas = torch.tensor([0.7, 1.9])
    out = _gaussian_blur(x, sigmas, 5)
    for i, s in enumerate(sigmas.tolist()):
        ref = TF.gaussian_blur(x[i], kernel_size=[5, 5], sigma=[s, s])
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)


def test_kernel_size_is_odd_and_about_ten_percent() -> None:
    assert BatchAugment(160).kernel_size == 17
    assert BatchAugment(224).kernel_size == 23
    assert BatchAugment(16).kernel_size == 3


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 0},
        {"scale": (0.0, 1.0)},
        {"ratio": (2.0, 1.0)},
        {"blur_p": 1.5},
        {"jitter": (1, 1, 1, 0.9)},
    ],
)
def test_invalid_parameters_raise(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        BatchAugment(**{"size": 8, **kwargs})  # type: ignore[arg-type]


def test_bad_input_raises() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        BatchAugment(8)(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="uint8 or float"):
        BatchAugment(8)(torch.ones(1, 3, 8, 8, dtype=torch.int32))


def test_resize_batch_uint8_centre_crop_and_antialias() -> None:
    x = (torch.rand(2, 3, 10, 14, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    out = resize_batch(x, 10)
    torch.testing.assert_close(out, x[..., 2:12].float() / 255, atol=1e-6, rtol=0)
    big = _images(2, 32)
    ref = F.interpolate(big, size=(8, 8), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(resize_batch(big, 8), ref.clamp(0, 1))
    assert resize_batch(x, 8, center_crop=False).shape == (2, 3, 8, 8)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_images_with_cpu_generator_match_cpu() -> None:
    x, aug = _images(4, 24), BatchAugment(16)
    cpu = aug(x, torch.Generator().manual_seed(1))
    gpu = aug(x.cuda(), torch.Generator().manual_seed(1))
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)


def test_resize_batch_uint8_fast_path_is_close_to_float() -> None:
    x = (torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    for size in (80, 20):
        fast = resize_batch(x, size)
        slow = resize_batch(x.float() / 255, size)
        assert fast.dtype == torch.float32 and fast.is_contiguous()
        assert (fast - slow).abs().max() <= 1.0 / 255 + 1e-6
