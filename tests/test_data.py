import cv2
import numpy as np
import pytest
import torch

from stages.lib.core.errors import UserError
from stages.lib.core.names import STUDY_CLASSES as CLASSES
from stages.lib.data.dataset import balanced_sampler, class_weights
from stages.lib.data.formats import load_gray
from stages.lib.data.layouts import read_course_split

HEADER = "new_filename,normal,bacteria,virus,COVID-19\n"


def course(tmp_path, rows, header=HEADER, images=("a.png",)):
    (tmp_path / "train_images").mkdir()
    for name in images:
        cv2.imwrite(str(tmp_path / "train_images" / name), np.full((20, 30), 128, np.uint8))
    (tmp_path / "train_data.csv").write_text(header + "".join(rows))
    return tmp_path


def test_class_weights_are_total_over_count():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 2 + [3] * 1)
    np.testing.assert_allclose(class_weights(labels, 4), [12 / 6, 12 / 3, 12 / 2, 12 / 1])


def test_absent_class_gets_zero_weight_not_infinity():
    assert class_weights(np.array([0, 0, 1]), 4)[3] == 0


def test_sampler_draws_classes_evenly_from_imbalanced_labels():
    labels = np.array([0] * 270 + [1] * 470 + [2] * 250 + [3] * 10)  # the study's proportions
    sampler = balanced_sampler(labels, torch.Generator().manual_seed(0))
    assert len(sampler) == len(labels)
    drawn = np.concatenate([labels[list(sampler)] for _ in range(20)])
    freq = np.bincount(drawn, minlength=4) / len(drawn)
    np.testing.assert_allclose(freq, 0.25, atol=0.02)


def test_sampler_is_seeded():
    """Its generator's seed alone decides the draw: the same seed the same draw whatever torch's global
    seed, another seed another draw."""
    labels = np.array([0, 0, 0, 1, 2, 3] * 10)

    def draw(seed: int, global_seed: int) -> list:
        torch.manual_seed(global_seed)
        return list(balanced_sampler(labels, torch.Generator().manual_seed(seed)))

    assert draw(1, 0) == draw(1, 123) != draw(2, 0)


def test_course_csv_is_parsed_to_paths_and_labels(tmp_path):
    data = course(tmp_path, ["a.png,0,0,1,0\n"])
    [sample] = read_course_split(data, "train", CLASSES)
    assert sample.path == data / "train_images" / "a.png" and CLASSES[sample.label] == "virus"


@pytest.mark.parametrize(
    "header,row,message",
    [
        ("new_filename,normal,bacteria,virus\n", "a.png,0,0,1\n", "missing column.*COVID-19"),
        (HEADER, "a.png,0,1,1,0\n", "exactly one 1"),
        (HEADER, "a.png,0,0,0,0\n", "exactly one 1"),
        (HEADER, "a.png,0,x,1,0\n", "must be 0 or 1"),
    ],
)
def test_bad_course_csv_is_refused_naming_file_and_line(tmp_path, header, row, message):
    data = course(tmp_path, [row], header=header)
    with pytest.raises(UserError, match=message) as err:
        read_course_split(data, "train", CLASSES)
    assert "train_data.csv" in str(err.value)


def test_missing_csv_names_the_expected_file(tmp_path):
    with pytest.raises(UserError, match="val_data.csv not found"):
        read_course_split(tmp_path, "val", CLASSES)


def test_corrupt_image_is_refused_naming_it(tmp_path):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(UserError, match="broken.jpeg: not a readable image"):
        load_gray(bad)[0]


@pytest.mark.parametrize(
    "pixels,expected",
    [
        (np.full((40, 50), 77, np.uint8), 77),  # 8-bit gray
        (np.full((40, 50), 200 * 257, np.uint16), 200),  # 16-bit gray keeps the full range
        (np.dstack([np.full((40, 50), 90, np.uint8)] * 3), 90),  # RGB with equal channels
        (np.dstack([np.full((40, 50), 90, np.uint8)] * 3 + [np.full((40, 50), 255, np.uint8)]), 90),  # RGBA
    ],
)
def test_images_decode_to_one_8bit_channel(tmp_path, pixels, expected):
    path = tmp_path / "img.png"
    cv2.imwrite(str(path), pixels)
    gray = load_gray(path)[0]
    assert gray.shape == (40, 50) and gray.dtype == np.uint8 and int(gray[0, 0]) == expected
