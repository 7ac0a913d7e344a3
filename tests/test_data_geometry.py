"""The torch-only inference geometry equals torchvision's eval preset pixel for pixel, and bounds what a strip
image may cost."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from alexnet.data.decode import BadImageError
from alexnet.data.geometry import MAX_RESIZED_PIXELS, CenterPatch, resize_center_crop


@pytest.mark.parametrize("hw", [(375, 500), (500, 375), (256, 256), (300, 300), (227, 1000), (1000, 229), (37, 50)])
@pytest.mark.parametrize("sizes", [(256, 224), (256, 227), (73, 67)])
def test_center_patch_equals_torchvision(hw, sizes):
    g = torch.Generator().manual_seed(hw[0] * 7 + sizes[1])
    img = torch.randint(0, 256, (3, *hw), dtype=torch.uint8, generator=g)
    resize, crop = sizes
    expected = v2.Compose([v2.Resize(resize, antialias=True), v2.CenterCrop(crop)])(img)
    assert torch.equal(CenterPatch(resize, crop)(img), expected)


def test_resize_center_crop_equals_torchvision_on_the_square():
    img = torch.randint(0, 256, (3, 300, 420), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    square = img[:, :, 60:360]
    expected = v2.functional.resize(square, [256, 256], antialias=True)
    assert torch.equal(resize_center_crop(img, 256), expected)


def test_a_strip_image_is_refused_before_it_is_resized():
    strip = torch.zeros(3, 1, 5000, dtype=torch.uint8)  # would become 1,280,000 x 256
    with pytest.raises(BadImageError, match="5000x1"):
        CenterPatch(256, 224)(strip)
    wide = torch.zeros(3, 10, 1000, dtype=torch.uint8)  # 100:1 is still an image: 25,600 x 256
    assert MAX_RESIZED_PIXELS > 25600 * 256
    assert CenterPatch(256, 224)(wide).shape == (3, 224, 224)


@pytest.mark.parametrize("mode, subsampling", [("RGB", 0), ("RGB", 2), ("L", 0)])
def test_jpeg_decode_equals_torchvision_without_importing_it(tmp_path, mode, subsampling):
    import io
    import warnings

    import numpy as np
    from PIL import Image

    from alexnet.data.decode import decode_image

    rng = np.random.default_rng(3)
    shape = (75, 100, 3) if mode == "RGB" else (75, 100)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(
        buf, "JPEG", quality=85, subsampling=subsampling
    )
    data = buf.getvalue()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.io import ImageReadMode, decode_jpeg

        expected = decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    assert torch.equal(decode_image(data), expected)


def _jpeg(shape: tuple[int, ...], mode: str, **save: object) -> bytes:
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(sum(shape))
    y, x = np.mgrid[: shape[0], : shape[1]]
    smooth = ((x * 3 + y * 5) % 256).astype(np.uint8)  # photo-like gradients plus noise: every DCT band used
    arr = np.clip(smooth[..., None] + rng.integers(0, 40, (*shape[:2], 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr if mode == "RGB" else arr[..., 0], mode).save(buf, "JPEG", **save)
    return buf.getvalue()


@pytest.mark.parametrize(
    "hw, mode, save",
    [
        ((375, 500), "RGB", {"quality": 90}),
        ((37, 50), "RGB", {"quality": 90}),  # smaller than min_size: full scale
        ((777, 1001), "RGB", {"quality": 85, "subsampling": 0}),  # draft at 1/2 for 256, sizes not multiples of 8
        ((1100, 2100), "RGB", {"quality": 75, "subsampling": 1, "progressive": True}),  # 1/4
        ((2100, 2300), "L", {"quality": 80}),  # 1/8, grayscale
    ],
)
@pytest.mark.parametrize("min_size", [None, 256, 227])
def test_simplejpeg_decodes_the_pixels_and_scales_of_pillow(monkeypatch, hw, mode, save, min_size):
    """The fast decoder (simplejpeg) gives the pixels and the draft scale of the Pillow path it replaces."""
    import io

    from PIL import Image

    from alexnet.data import decode

    if decode.simplejpeg is None:
        pytest.skip("simplejpeg is not installed: Pillow decodes every JPEG")
    data = _jpeg(hw, mode, **save)
    fast = decode.decode_image(data, min_size=min_size)
    monkeypatch.setattr(decode, "simplejpeg", None)
    slow = decode.decode_image(data, min_size=min_size)
    assert fast.shape == slow.shape and torch.equal(fast, slow)
    with Image.open(io.BytesIO(data)) as im:
        if min_size:
            im.draft("RGB", (min_size, min_size))
        assert fast.shape[1:] == (im.size[1], im.size[0])
    s = decode.draft_scale(hw[1], hw[0], min_size)
    assert fast.shape[1:] == (-(-hw[0] // s), -(-hw[1] // s))
    assert s == ({37: 1, 375: 1, 777: 2, 1100: 4, 2100: 8}[hw[0]] if min_size else 1)


def test_a_corrupt_jpeg_still_gets_the_one_line_error_with_simplejpeg():
    from alexnet.data.decode import decode_image

    data = bytearray(_jpeg((375, 500), "RGB", quality=90))
    data[len(data) // 2 : len(data) // 2 + 400] = bytes(400)  # entropy-coded data zeroed: libjpeg warns
    data = bytes(data[: len(data) * 3 // 4])  # and cut short
    with pytest.raises(BadImageError, match="^<bytes>: ") as e:
        decode_image(data)
    assert "\n" not in str(e.value)


def test_the_normalizer_is_torchvisions_arithmetic_bit_for_bit_and_leaves_its_input():
    from torchvision.transforms import functional as TF

    from alexnet.data.geometry import Normalizer

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    img = torch.randint(0, 256, (2, 3, 40, 50), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    want = torch.stack([TF.normalize(TF.convert_image_dtype(i, torch.float32), mean, std) for i in img])
    assert torch.equal(Normalizer(mean, std)(img), want)
    assert torch.equal(Normalizer(mean, std)(img[0]), want[0])
    before = img.clone()
    Normalizer(mean, std, value_scale=255.0)(img)  # its input is not modified in place
    assert torch.equal(img, before)
    with pytest.raises(TypeError) as e:  # a float batch is refused, never normalised a second time
        Normalizer(mean, std)(want)
    assert str(e.value) == (
        "Normalizer takes uint8 images (0..255) and normalises them, got float32: a float batch would be normalised "
        "twice; give the uint8 pictures, or call Preprocessing(img) on [0, 1] floats"
    )
