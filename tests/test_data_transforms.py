"""Geometry, ten-crop, PCA lighting and the batched float transform (paper section 4.1)."""

import pytest
import torch
from torchvision.transforms.v2 import functional as F

from alexnet.data import transforms as T
from alexnet.weights import Preprocessing


def _img(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("h,w", [(400, 300), (300, 400), (300, 300), (256, 256), (100, 180)])
def test_sizes_portrait_landscape_square(h, w):
    img = _img(h, w)
    assert T.resize_center_crop(img, 256).shape == (3, 256, 256)
    for size in (224, 227):
        pre = Preprocessing(input_size=size)
        assert pre.geometry(True)(img).shape == (3, size, size)
        assert pre.geometry(True)(img).dtype == torch.uint8
        assert pre.geometry(False)(img).shape == (3, size, size)
        assert pre.geometry(False, ten_crop=True)(img).shape == (10, 3, size, size)
        assert pre.eval_transform()(img).shape == (3, size, size)
    # eval: torchvision's short side resize keeps the aspect ratio before the centre crop
    short = min(h, w)
    resized = F.resize(img, 256, antialias=True)
    assert min(resized.shape[-2:]) == 256
    assert resized.shape[-2:] == (round(h * 256 / short), round(w * 256 / short)) or max(resized.shape[-2:]) > 255


def test_resize_center_crop_keeps_prepared_image_and_crops_centre():
    img = _img(256, 256)
    assert T.resize_center_crop(img, 256) is img
    tall = _img(400, 256)
    assert torch.equal(T.resize_center_crop(tall, 256), tall[:, 72:328, :])


def test_ten_crop_equals_manual_slicing():
    img = _img(300, 420)
    s, r = 224, 256
    base = T.resize_center_crop(img, r)
    crops = T.TenCrop(r, s)(img)
    c = (r - s) // 2
    manual = [base[:, :s, :s], base[:, :s, r - s :], base[:, r - s :, :s], base[:, r - s :, r - s :]]
    manual.append(base[:, c : c + s, c : c + s])
    # torchvision's order: five crops of the image, then five crops of its mirror (tl of the mirror = tr mirrored)
    manual += [manual[i].flip(-1) for i in (1, 0, 3, 2, 4)]
    assert crops.shape == (10, 3, s, s)
    for k in range(10):
        assert torch.equal(crops[k], manual[k]), k


def test_train_geometry_crops_come_from_the_central_square():
    img = _img(256, 256, seed=3)
    geo = Preprocessing(input_size=224).geometry(True)
    torch.manual_seed(0)
    flips = 0
    for _ in range(20):
        out = geo(img)
        found = False
        for cand, flipped in ((out, False), (out.flip(-1), True)):
            # locate the patch: its top-left pixel row must match somewhere in the 33x33 offsets
            for top in range(33):
                for left in range(33):
                    if torch.equal(img[:, top : top + 224, left : left + 224], cand):
                        found, flips = True, flips + flipped
                        break
                if found:
                    break
            if found:
                break
        assert found
    assert 0 < flips < 20  # mirrors happen, not always


def test_pca_lighting_statistics():
    torch.manual_seed(0)
    vals = torch.tensor(T.IMAGENET_EIGVALS)
    vecs = torch.tensor(T.IMAGENET_EIGVECS)
    light = T.PCALighting(0.1)
    shifts = light.shifts(200_000)
    assert shifts.mean(0).abs().max() < 5e-4
    expected = vecs @ torch.diag(0.01 * vals**2) @ vecs.T
    cov = torch.cov(shifts.T)
    assert torch.allclose(cov, expected, atol=2e-5, rtol=0.03)
    # one shift per image, the same on every pixel of it
    x = torch.zeros(4, 3, 5, 5)
    y = light(x)
    assert torch.allclose(y, y[:, :, :1, :1].expand_as(y))
    assert not torch.allclose(y[0], y[1])


def test_batch_transform_lighting_scales_with_value_scale():
    torch.manual_seed(1)
    x = torch.full((2000, 3, 2, 2), 128, dtype=torch.uint8)
    pre = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), value_scale=255.0)
    out = pre.batch_transform(True, lighting=0.1)(x)
    shift = out[:, :, 0, 0] - 128.0
    vals = torch.tensor(T.IMAGENET_EIGVALS) * 255
    vecs = torch.tensor(T.IMAGENET_EIGVECS)
    expected = vecs @ torch.diag(0.01 * vals**2) @ vecs.T
    assert torch.allclose(torch.cov(shift.T), expected, rtol=0.15, atol=1e-3)
    # eval: no lighting, exact normalisation
    ev = pre.batch_transform(False, lighting=0.1)(x)
    assert torch.equal(ev, torch.full_like(ev, 128.0))


def test_batch_transform_matches_normalizer_and_eval_transform():
    img = _img(300, 360)
    pre = Preprocessing()
    geo = pre.geometry(False)(img)
    a = pre.batch_transform(False)(geo.unsqueeze(0))[0]
    assert torch.allclose(a, pre.normalizer()(geo), atol=1e-5)
    assert torch.allclose(a, pre.eval_transform()(img), atol=1e-5)
    ten = pre.geometry(False, ten_crop=True)(img)
    assert torch.allclose(pre.batch_transform(False)(ten.unsqueeze(0))[0], pre.ten_crop_transform()(img), atol=1e-5)


def test_per_pixel_mean_image():
    from alexnet.data.stats import Stats

    g = torch.Generator().manual_seed(0)
    mean_image = torch.rand(3, 256, 256, generator=g)
    stats = Stats((0.5,) * 3, (0.2,) * 3, (1e-3,) * 3, torch.eye(3).tolist(), torch.eye(3).tolist(), 1, 256)
    stats.mean_image = mean_image.numpy()
    pre = Preprocessing(mean=(0, 0, 0), std=(1, 1, 1), value_scale=255.0)
    bt = pre.batch_transform(False, stats=stats, per_pixel_mean=True)
    x = torch.zeros(1, 3, 224, 224, dtype=torch.uint8)
    assert torch.allclose(bt(x)[0], -F.center_crop(mean_image, [224, 224]) * 255, atol=1e-4)
    ten = torch.zeros(1, 10, 3, 224, 224, dtype=torch.uint8)
    expected = torch.stack(list(F.ten_crop(mean_image, [224, 224]))) * -255
    assert torch.allclose(bt(ten)[0], expected, atol=1e-4)
    with pytest.raises(ValueError):
        pre.batch_transform(False, per_pixel_mean=True)


def test_random_patch_matches_resize_then_crop():
    """The fused patch (crop the source, resample once) is the paper's crop of the 256 image up to resampling."""
    from torchvision.transforms.v2 import functional as F

    from alexnet.data.transforms import RandomPatch, resize_center_crop

    y, x = torch.meshgrid(torch.arange(375.0), torch.arange(500.0), indexing="ij")
    img = torch.stack([x / 2, y / 1.5, (x + y) / 3.5]).clamp(0, 255).to(torch.uint8)  # smooth (3, 375, 500)
    patch = RandomPatch(256, 224)
    for seed in range(5):
        torch.manual_seed(seed)
        out = patch(img)
        torch.manual_seed(seed)
        i, j = (int(v) for v in torch.randint(0, 33, (2,)))
        ref = F.crop(resize_center_crop(img, 256), i, j, 224, 224)
        assert out.shape == ref.shape == (3, 224, 224)
        assert (out.float() - ref.float()).abs().mean() < 1.5
