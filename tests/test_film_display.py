"""Films shown as a viewer shows them (issue 31): DICOM padding is background and outside the range,
a DICOM without a window is scaled by the values it holds, transparency is composited on black."""

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import by_values_present, course_tree, gradient, run_predict, write_dicom
from stages.lib.data.formats import BadImage, load_gray


def padded_film(dtype, padding: int) -> tuple[np.ndarray, np.ndarray]:
    """A round field of view (values 100..3000) padded to a rectangle with `padding`; (pixels, padding mask)."""
    rows, cols = np.mgrid[:64, :80]
    pad = (rows - 32) ** 2 + (cols - 40) ** 2 > 30**2
    pixels = np.repeat(np.linspace(100, 3000, 64), 80).reshape(64, 80).astype(dtype)
    pixels[pad] = padding
    return pixels, pad


# --- 1. padding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("signed", [True, False])
def test_padding_is_background_and_left_out_of_the_range(tmp_path, signed):
    # the film: raw detector output, signed 16 bits, padding -2000, no window
    pixels, pad = padded_film(np.int16 if signed else np.uint16, -2000 if signed else 0)
    path = tmp_path / "padded.dcm"
    write_dicom(path, pixels, "MONOCHROME2", 16, PixelRepresentation=int(signed), PixelPaddingValue=int(pixels[0, 0]))
    gray, facts = load_gray(path)
    assert (gray[pad] == 0).all()  # background, not mid-gray
    np.testing.assert_array_equal(gray[~pad], by_values_present(pixels[~pad]))
    assert gray[~pad].min() == 0 and gray[~pad].max() == 255 and facts["scaled_by"] == "DICOM values present"


def test_a_signed_padding_value_stored_as_us_is_read_in_the_images_bits(tmp_path):
    pixels, pad = padded_film(np.int16, -2000)
    path = tmp_path / "us.dcm"
    write_dicom(path, pixels, "MONOCHROME2", 16, PixelRepresentation=1)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.add_new(0x00280120, "US", 63536)  # -2000's two's complement, as a writer that ignores the sign puts it
    ds.save_as(path)
    gray, _ = load_gray(path)
    assert (gray[pad] == 0).all()
    np.testing.assert_array_equal(gray[~pad], by_values_present(pixels[~pad]))


def test_a_padding_range_is_background_and_left_out_of_the_range(tmp_path):
    # background air with noise 0..50 flagged by Pixel Padding Value 0 and Pixel Padding Range Limit 50
    pixels, pad = padded_film(np.uint16, 0)
    pixels[pad] = np.random.default_rng(0).integers(0, 51, int(pad.sum()))
    path = tmp_path / "range.dcm"
    write_dicom(path, pixels, "MONOCHROME2", 12, PixelPaddingValue=0, PixelPaddingRangeLimit=50)
    gray, _ = load_gray(path)
    assert (gray[pad] == 0).all()
    np.testing.assert_array_equal(gray[~pad], by_values_present(pixels[~pad]))


def test_monochrome1_padding_is_background_too(tmp_path):
    pixels, pad = padded_film(np.uint16, 4095)  # MONOCHROME1 pads with its maximum: black on display
    path = tmp_path / "mono1.dcm"
    write_dicom(path, pixels, "MONOCHROME1", 12, PixelPaddingValue=4095)
    gray, _ = load_gray(path)
    assert (gray[pad] == 0).all()
    np.testing.assert_array_equal(gray[~pad], 255 - by_values_present(pixels[~pad]))


def test_a_film_that_is_all_padding_is_a_bad_file(tmp_path):
    path = tmp_path / "blank.dcm"
    write_dicom(path, np.zeros((64, 80), np.uint16), "MONOCHROME2", 12, PixelPaddingValue=0)
    with pytest.raises(BadImage, match=r"every pixel is padding \(PixelPaddingValue 0\)") as err:
        load_gray(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_malformed_padding_value_is_a_bad_file_in_one_line(tmp_path):
    path = tmp_path / "two.dcm"
    write_dicom(path, padded_film(np.uint16, 0)[0], "MONOCHROME2", 12)
    import pydicom

    ds = pydicom.dcmread(path)
    ds.add_new(0x00280120, "US", [0, 7])  # two values where the standard allows one
    ds.save_as(path)
    with pytest.raises(BadImage, match=r"DICOM values cannot be displayed .*padding value") as err:
        load_gray(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


# --- 2. no window, a narrow range ------------------------------------------------------------------


def test_a_narrow_film_without_a_window_fills_the_gray_range(tmp_path):
    # BitsStored 16 holding 0..900 decoded to gray 0..4 before: a black film
    values = np.repeat(np.linspace(0, 900, 64), 80).reshape(64, 80).astype(np.uint16)
    path = tmp_path / "narrow.dcm"
    write_dicom(path, values, "MONOCHROME2", 16)
    gray, facts = load_gray(path)
    np.testing.assert_array_equal(gray, by_values_present(values))
    assert gray.min() == 0 and gray.max() == 255 and facts["scaled_by"] == "DICOM values present"


def test_the_range_is_taken_after_the_rescale_whatever_its_sign(tmp_path):
    stored = np.repeat(np.linspace(0, 900, 64), 80).reshape(64, 80).astype(np.uint16)
    path = tmp_path / "inverse.dcm"
    write_dicom(path, stored, "MONOCHROME2", 16, RescaleSlope=-2, RescaleIntercept=5000)
    np.testing.assert_array_equal(load_gray(path)[0], by_values_present(5000 - 2 * stored.astype(float)))


def test_a_few_outliers_do_not_set_the_range(tmp_path):
    values = np.repeat(np.linspace(0, 900, 64), 80).reshape(64, 80).astype(np.uint16)
    hot = values.copy()
    hot[10, 10:13] = 65535  # three hot pixels of a detector
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    write_dicom(a, values, "MONOCHROME2", 16)
    write_dicom(b, hot, "MONOCHROME2", 16)
    clean, spotted = load_gray(a)[0].astype(int), load_gray(b)[0].astype(int)
    spotted[10, 10:13] = clean[10, 10:13]
    assert np.abs(clean - spotted).max() <= 1


def _dim_dicom(path):
    write_dicom(path, np.repeat(np.linspace(0, 900, 40), 60).reshape(40, 60).astype(np.uint16), "MONOCHROME2", 16)


def test_the_rule_is_in_the_data_report_and_on_predicts_screen(tmp_path, model_path, monkeypatch, capsys):  # noqa: F811
    from helpers import preprocess

    data = course_tree(tmp_path / "data")
    _dim_dicom(data / "train_images" / "train1.png")  # a DICOM under a .png name: read by its DICM magic
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    report = json.loads((tmp_path / "metrics/data_report.json").read_text())
    assert code == 0 and report["images"]["normal"]["scaled_by"]["DICOM values present (16 bits)"] == 1
    images = tmp_path / "new"
    images.mkdir()
    _dim_dicom(images / "dim.dcm")
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", tmp_path / "p.csv", "--workers", "0"], monkeypatch, capsys
    )
    assert code == 0 and f"note: {images / 'dim.dcm'}: no DICOM window; scaled by the values present" in err


# --- 10. transparency ------------------------------------------------------------------------------


def two_looks(tmp_path, mode: str, depth=np.uint8) -> tuple:
    """Two files a viewer shows alike: the transparent half holds 0 in one, the top value in the other."""
    top = np.iinfo(depth).max
    film = np.repeat(np.linspace(top // 4, top, 64), 80).reshape(64, 80).astype(depth)
    alpha = np.full_like(film, top)
    alpha[:, 40:] = 0
    alpha[:, 30:40] = top // 2  # a soft edge
    paths = []
    for under in (0, top):
        gray = film.copy()
        gray[:, 40:] = under
        planes = [gray, alpha] if mode == "LA" else [gray, gray, gray, alpha]
        path = tmp_path / f"{mode}{under}.png"
        if depth == np.uint8:
            Image.fromarray(np.dstack(planes), mode).save(path)
        else:  # Pillow writes no 16-bit RGBA; OpenCV does (BGRA order, gray planes alike)
            cv2.imwrite(str(path), np.dstack(planes))
        paths.append(path)
    return paths, film, alpha


@pytest.mark.parametrize("mode,depth", [("RGBA", np.uint8), ("LA", np.uint8), ("RGBA", np.uint16)])
def test_transparent_pixels_are_composited_on_black(tmp_path, mode, depth):
    (a, b), film, alpha = two_looks(tmp_path, mode, depth)
    (ga, fa), (gb, _) = load_gray(a), load_gray(b)
    np.testing.assert_array_equal(ga, gb)  # what shows through the alpha, whatever lies under it
    top = np.iinfo(depth).max
    shown = np.round(film.astype(float) / top * 255) * alpha / top
    assert np.abs(ga.astype(float) - shown).max() <= 1 and (ga[:, 40:] == 0).all()
    assert fa["transparent"] is True


def test_transparency_opencv_drops_is_read_from_pillow(tmp_path):
    film = gradient(255, np.uint8)
    alpha = np.full_like(film, 255)
    alpha[:, 40:] = 0
    Image.fromarray(np.dstack([film, alpha]), "LA").save(tmp_path / "la.tif")  # OpenCV returns the gray only
    Image.fromarray(film).save(tmp_path / "trns.png", transparency=255)  # a gray PNG's tRNS: 255 is see-through
    gray, facts = load_gray(tmp_path / "la.tif")
    assert (gray[:, 40:] == 0).all() and (gray[:, :40] == film[:, :40]).all() and facts["transparent"]
    gray, _ = load_gray(tmp_path / "trns.png")
    np.testing.assert_array_equal(gray, np.where(film == 255, 0, film))


def test_transparency_pillow_cannot_read_is_a_bad_file_in_one_line(tmp_path, monkeypatch):
    film = gradient(255, np.uint8)
    Image.fromarray(film).save(tmp_path / "trns.png", transparency=255)

    def truncated(*args, **kwargs):
        raise OSError("image file is truncated")

    monkeypatch.setattr(Image.Image, "convert", truncated)
    with pytest.raises(BadImage, match="its transparency cannot be read") as err:
        load_gray(tmp_path / "trns.png")
    assert str(tmp_path / "trns.png") in str(err.value) and "\n" not in str(err.value)


def test_an_opaque_alpha_changes_nothing_and_is_not_noted(tmp_path):
    film = gradient(255, np.uint8)
    path = tmp_path / "opaque.png"
    Image.fromarray(np.dstack([film, np.full_like(film, 255)]), "LA").save(path)
    gray, facts = load_gray(path)
    np.testing.assert_array_equal(gray, film)
    assert facts["transparent"] is False


def test_transparency_is_noted_in_the_data_report_and_by_predict(tmp_path, model_path, monkeypatch, capsys):  # noqa: F811
    from helpers import preprocess

    data = course_tree(tmp_path / "data")
    (path, _), _, _ = two_looks(tmp_path, "LA")
    (data / "val_images" / "val13.png").write_bytes(path.read_bytes())
    code, err = preprocess(tmp_path, monkeypatch, capsys)
    report = json.loads((tmp_path / "metrics/data_report.json").read_text())
    assert code == 0 and report["transparency"]["files"] == [{"split": "val", "file": "val13.png"}]
    assert "note: 1 file(s) with transparent pixels: composited on black" in err
    images = tmp_path / "new"
    images.mkdir()
    (images / "see-through.png").write_bytes(path.read_bytes())
    code, _, err = run_predict(
        ["--model", model_path, "--images", images, "--out", tmp_path / "p.csv", "--workers", "0"], monkeypatch, capsys
    )
    assert code == 0 and f"note: {images / 'see-through.png'}: transparent pixels composited on black" in err
