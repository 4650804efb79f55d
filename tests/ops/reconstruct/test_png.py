"""The matplotlib-free PNG writer: matplotlib's colours exactly, a PNG that Pillow decodes to the same pixels, bounds."""

from __future__ import annotations

import numpy as np
import pytest

from ptycho_bridge.ops.reconstruct import png

matplotlib = pytest.importorskip("matplotlib")
Image = pytest.importorskip("PIL.Image")


@pytest.mark.parametrize("cmap", ["gray", "viridis"])
def test_colour_tables_are_matplotlibs(cmap: str) -> None:
    want = matplotlib.colormaps[cmap](np.arange(256), bytes=True)[:, :3]
    np.testing.assert_array_equal(png.colour_table(cmap), want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_pixel_colours_match_matplotlib_normalize_and_cmap(dtype: type) -> None:
    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 50)).astype(dtype)
    vmin, vmax = -1.5, 2.0  # values beyond both ends too
    data[0, :4] = [vmin, vmax, np.nextafter(dtype(vmax), dtype(0)), 0.5]
    norm = matplotlib.colors.Normalize(vmin=vmin, vmax=vmax)
    want = matplotlib.colormaps["viridis"](norm(data), bytes=True)[..., :3]
    idx = png.colour_indices(data, vmin, vmax)
    np.testing.assert_array_equal(png.colour_table("viridis")[idx], want)
    nan = data.copy()
    nan[5, 5] = np.nan
    assert png.colour_indices(nan, vmin, vmax)[5, 5] == -1


def _decode(data: bytes) -> tuple[np.ndarray, dict[str, str]]:
    import io

    im = Image.open(io.BytesIO(data))
    return np.asarray(im.convert("RGB")), dict(im.text)


def test_encoded_png_decodes_to_the_same_pixels_and_text() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    got, text = _decode(png.encode_png(rgb, {"Title": "amplitude", "Comment": "x"}))
    np.testing.assert_array_equal(got, rgb)
    assert text == {"Title": "amplitude", "Comment": "x"}
    with pytest.raises(ValueError):
        png.encode_png(np.zeros((0, 3, 3), np.uint8))


def test_figure_keeps_every_canvas_pixel_upscaled_with_range_in_text() -> None:
    data = np.linspace(0, 1, 20 * 30, dtype=np.float32).reshape(20, 30)
    data[3, 4] = np.nan
    got, text = _decode(png.figure_png([png.Panel(data, "gray", "amplitude")]))
    up = png.MIN_SIDE // 30
    m = png.MARGIN
    image = got[m:m + 20 * up:up, m:m + 30 * up:up]  # one sample per canvas pixel
    finite = np.nan_to_num(data, nan=0.0)
    want = png.colour_table("gray")[png.colour_indices(finite, float(np.nanmin(data)), float(np.nanmax(data)))]
    want[3, 4] = 255  # NaN is drawn white (matplotlib's transparent 'bad' over a white figure)
    np.testing.assert_array_equal(image, want)
    assert "cmap gray; colour bar 0 .. 1;" in text["Panel1"] and f"drawn x{up}" in text["Panel1"]


def test_huge_canvas_is_strided_to_the_bound() -> None:
    data = np.zeros((png.MAX_SIDE * 2 + 1, 10), np.float32)
    rgb = png.render(png.Panel(data, "viridis", "phase"))
    assert rgb.shape[0] <= png.MAX_SIDE + 2 * png.MARGIN and rgb.shape[1] < 200
