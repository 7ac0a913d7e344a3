"""Decoding every kind of image file, good and bad, to RGB uint8 (3, H, W)."""

import io

import numpy as np
import pytest
import torch
from _builders import jpeg_bytes
from PIL import Image

from alexnet.data.decode import BadImageError, decode_image


def _rgb(h=40, w=60):
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([x * 255 // w, y * 255 // h, np.full_like(x, 90)], -1).astype(np.uint8)


def _save(im, fmt, **kw):
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def test_jpeg_rgb_and_grayscale(tmp_path):
    p = tmp_path / "a.jpg"
    p.write_bytes(_save(Image.fromarray(_rgb()), "JPEG", quality=95))
    x = decode_image(p)
    assert x.shape == (3, 40, 60) and x.dtype == torch.uint8
    assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - _rgb()).mean() < 3
    g = decode_image(_save(Image.fromarray(_rgb()[..., 0]), "JPEG"))
    assert g.shape == (3, 40, 60) and torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])


def test_dct_downscale_keeps_min_size():
    data = _save(Image.fromarray(np.tile(_rgb(), (10, 10, 1))), "JPEG")  # 400 x 600
    assert decode_image(data).shape == (3, 400, 600)
    small = decode_image(data, min_size=100)  # 1/2 would be 200, 1/4 is 100
    assert small.shape == (3, 100, 150)
    assert decode_image(data, min_size=250).shape == (3, 400, 600)  # 1/2 would be too small


@pytest.mark.parametrize(
    "mode,fmt",
    [("CMYK", "JPEG"), ("RGBA", "PNG"), ("LA", "PNG"), ("P", "PNG"), ("L", "PNG"), ("I;16", "PNG"), ("RGB", "BMP")],
)
def test_modes_become_rgb(mode, fmt):
    rgb = Image.fromarray(_rgb())
    if mode == "I;16":
        im = Image.fromarray(_rgb()[..., 0].astype(np.uint16) * 257)
        assert im.mode.startswith("I;16")
    elif mode == "P":
        im = rgb.convert("P", palette=Image.Palette.ADAPTIVE)
    else:
        im = rgb.convert(mode)
    x = decode_image(_save(im, fmt), name=f"x.{fmt.lower()}")
    assert x.shape == (3, 40, 60) and x.dtype == torch.uint8
    if mode == "I;16":
        assert abs(int(x[0, 0, -1]) - int(_rgb()[0, -1, 0])) <= 1


def test_alpha_composited_on_white():
    a = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    x = decode_image(_save(Image.fromarray(a, "RGBA"), "PNG"))
    assert (x == 255).all()


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation(orientation):
    arr = _rgb(30, 50)
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _save(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    x = decode_image(data)
    want = np.asarray(
        Image.open(io.BytesIO(data))
        .transpose(
            {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_270, 8: Image.Transpose.ROTATE_90}[orientation]
        )
        .convert("RGB")
    )
    assert x.shape[1:] == want.shape[:2]
    assert np.abs(x.permute(1, 2, 0).numpy().astype(int) - want).max() <= 2


def test_bad_files_name_the_file(tmp_path):
    good = _save(Image.fromarray(_rgb()), "JPEG")
    cases = {
        "missing.jpg": None,
        "empty.jpg": b"",
        "truncated.jpg": good[: len(good) // 2],
        "text.jpg": b"hello, not an image\n",
        "garbage.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,
    }
    for name, data in cases.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        with pytest.raises(BadImageError) as e:
            decode_image(p)
        msg = str(e.value)
        assert name in msg and "\n" not in msg, msg
    with pytest.raises(BadImageError, match="directory"):
        decode_image(tmp_path)


@pytest.mark.parametrize(
    "kw",
    [
        {},
        {"mode": "L"},
        {"mode": "CMYK"},
        {"progressive": True, "size": (33, 17)},
        {"orientation": 6},
        {"orientation": 1, "exif_tags": {0x010F: "camera maker"}},
        {"exif_tags": {0x010F: "no orientation"}},
    ],
)
def test_jpeg_header_reads_what_pillow_reads(kw):
    from alexnet.data.decode import jpeg_header

    data = jpeg_bytes(**kw)
    with Image.open(io.BytesIO(data)) as im:
        expected = (*im.size, len(im.getbands()), im.getexif().get(0x0112, 1))
    assert jpeg_header(data) == expected


def test_jpeg_header_gives_up_on_anything_odd():
    from alexnet.data.decode import jpeg_header

    good = jpeg_bytes()
    assert jpeg_header(good[:40]) is None  # cut inside the header
    assert jpeg_header(b"\xff\xd8\xff\xe0\x00") is None
    assert jpeg_header(b"\x89PNG\r\n\x1a\n") is None
    bad_exif = (
        jpeg_bytes(orientation=3)
        .replace(b"Exif\x00\x00MM", b"Exif\x00\x00XX")
        .replace(b"Exif\x00\x00II", b"Exif\x00\x00XX")
    )
    assert jpeg_header(bad_exif) is None
    # decode_image still reads such files (through Pillow) or names them
    assert decode_image(good).shape == (3, 30, 40)
