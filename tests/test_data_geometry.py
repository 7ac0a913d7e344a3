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
