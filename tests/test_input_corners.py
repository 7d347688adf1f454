"""Hospital exports at the edges of the formats (issue 20): an 8-bit VOI LUT, PALETTE COLOR,
multi-frame files, 16-bit MinIsWhite TIFF and compressed DICOM transfer syntaxes."""

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.pixels import get_decoder
from pydicom.sequence import Sequence

from helpers import by_values_present, gradient, write_dicom
from stages.lib.data.formats import BadImage, _gdcm_first_frame, load_gray


def test_an_8bit_voi_lut_maps_every_stored_value_without_wrapping(tmp_path):
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)  # every value 0..4095 once
    lut = np.round(255 * np.sqrt(np.arange(4096) / 4095)).astype(np.uint8)  # 8-bit entries
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 8])  # LUT Descriptor: entries, first value, bits per entry
    item.add_new(0x00283006, "US", lut.tolist())  # LUT Data
    path = tmp_path / "lut8.dcm"
    write_dicom(path, stored, "MONOCHROME2", 12, VOILUTSequence=Sequence([item]))
    gray, facts = load_gray(path)
    # the LUT's output range is 0..255, so each stored value shows as its own entry, exactly
    np.testing.assert_array_equal(gray, lut[stored])
    assert facts["scaled_by"] == "DICOM VOI LUT"


def test_a_voi_lut_with_a_first_value_clamps_below_and_above(tmp_path):
    stored = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) % 1000
    lut = np.arange(0, 256, dtype=np.uint8)  # 256 entries for stored values 500..755
    item = pydicom.Dataset()
    item.add_new(0x00283002, "US", [256, 500, 8])
    item.add_new(0x00283006, "US", lut.tolist())
    path = tmp_path / "lut_first.dcm"
    write_dicom(path, stored, "MONOCHROME2", 12, VOILUTSequence=Sequence([item]))
    expected = lut[np.clip(stored.astype(int) - 500, 0, 255)]
    np.testing.assert_array_equal(load_gray(path)[0], expected)


@pytest.mark.parametrize("name", ["examples_palette.dcm", "SC_rgb_rle_2frame.dcm"])
def test_palette_and_multiframe_colour_dicom_are_refused_in_one_line(name):
    path = get_testdata_file(name)  # shipped with pydicom
    with pytest.raises(BadImage, match=r"colour DICOM \((PALETTE COLOR|RGB)\); export it as grayscale") as err:
        load_gray(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_multiframe_gray_dicom_gives_its_first_frame_and_says_how_many(tmp_path):
    frames = np.stack(
        [gradient(4095, np.uint16), 4095 - gradient(4095, np.uint16), np.zeros_like(gradient(1, np.uint16))]
    )
    path = tmp_path / "cine.dcm"
    write_dicom(path, frames[0], "MONOCHROME2", 12)
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(path)
    single = tmp_path / "one.dcm"
    write_dicom(single, frames[0], "MONOCHROME2", 12)
    gray, facts = load_gray(path)
    np.testing.assert_array_equal(gray, load_gray(single)[0])
    assert facts["frames"] == 3


def test_a_multipage_tiff_gives_its_first_page_and_says_how_many(tmp_path):
    pages = [Image.fromarray(gradient(255, np.uint8)), Image.fromarray(255 - gradient(255, np.uint8))]
    path = tmp_path / "pages.tif"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    gray, facts = load_gray(path)
    np.testing.assert_array_equal(gray, gradient(255, np.uint8))
    assert facts["frames"] == 2


def test_a_16bit_min_is_white_tiff_is_inverted_as_the_8bit_one_is(tmp_path):
    film = gradient(255, np.uint8)
    eight, sixteen = tmp_path / "w8.tif", tmp_path / "w16.tif"
    Image.fromarray(film).save(eight, tiffinfo={262: 0})  # Pillow stores 255 - film, tagged MinIsWhite
    raw16 = (255 - film).astype(np.uint16) * 257  # the same stored film at 16 bits
    Image.frombytes("I;16", film.shape[::-1], raw16.tobytes()).save(sixteen, tiffinfo={262: 0})
    assert Image.open(sixteen).tag_v2[262] == 0
    np.testing.assert_array_equal(load_gray(eight)[0], film)
    np.testing.assert_array_equal(load_gray(sixteen)[0], film)  # white where 0 is stored


def test_jpeg_ls_decodes_exactly_as_the_uncompressed_file():
    gray, facts = load_gray(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    np.testing.assert_array_equal(gray, load_gray(get_testdata_file("MR_small.dcm"))[0])


def test_jpeg_lossless_decodes_exactly_as_the_uncompressed_file(tmp_path):
    gdcm = pytest.importorskip("gdcm")  # in the lock: only a broken install skips
    source, path = get_testdata_file("MR_small.dcm"), tmp_path / "jpll.dcm"
    reader = gdcm.ImageReader()
    reader.SetFileName(source)
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLosslessProcess14_1))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(path))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == pydicom.uid.JPEGLosslessSV1
    np.testing.assert_array_equal(load_gray(path)[0], load_gray(source)[0])


def test_12bit_jpeg_extended_decodes_to_pydicoms_reference_values():
    path = get_testdata_file("JPGExtended.dcm")  # 1024 x 256, 12 bits stored, no window
    raw = _gdcm_first_frame(path, 1024, 256)
    # pydicom's test suite reference pixels for this file: 244 at [420, 140], 95 at [230, 120]
    assert [raw[420, 140], raw[230, 120]] == [244, 95]
    gray, facts = load_gray(path)
    np.testing.assert_array_equal(gray, by_values_present(raw))  # no window: the range of the values present
    assert (facts["bit_depth"], facts["scaled_by"]) == (12, "DICOM values present")


def test_an_undecodable_transfer_syntax_names_what_to_install_in_whole_words(tmp_path, monkeypatch):
    decoder = get_decoder(pydicom.uid.JPEGLSLossless)  # as pydicom sees it without python-gdcm:
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(decoder, "_unavailable", {**decoder._unavailable, "gdcm": ("gdcm>=3.0.10",)})
    path = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(BadImage) as err:
        load_gray(path)
    message = str(err.value)
    assert "JPEG-LS Lossless Image Compression pixel data cannot be decoded" in message
    assert "install pyjpegls>=1.2 or python-gdcm>=3.0.10 (pip)" in message
    assert message.endswith("convert it to uncompressed DICOM or PNG") and "libjpeg>" not in message
