import math

import numpy as np
import pytest
import torch

from stages.lib.data import transforms as T
from stages.lib.params.schema import Augment, Preprocess

PRE = Preprocess(img_size=64)
AUG = Augment()  # the study's


def film(h=300, w=420, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(40, 200, (h, w), dtype=np.uint8)


def test_preprocess_gives_square_uint8_of_img_size():
    out = T.preprocess_image(film(), T.preprocess_transform(PRE))
    assert out.shape == (64, 64) and out.dtype == np.uint8


def test_preprocess_is_deterministic():
    tf = T.preprocess_transform(PRE)
    a, b = T.preprocess_image(film(), tf), T.preprocess_image(film(), T.preprocess_transform(PRE))
    assert np.array_equal(a, b) and np.array_equal(a, T.preprocess_image(film(), tf))


def test_center_crop_removes_the_outer_border():
    img = np.full((400, 400), 100, np.uint8)
    img[:12], img[-12:], img[:, :12], img[:, -12:] = 255, 255, 255, 255  # a 3 % white frame
    out = T.preprocess_image(img, T.preprocess_transform(PRE))
    assert out.max() == out.min()  # the 90 % centre crop has cut the frame away: one grey level left


def test_preprocess_crop_size_follows_the_study():
    assert T.crop_size(256, 0.9) == 230


def test_augment_keeps_shape_dtype_and_is_seeded():
    img = T.preprocess_image(film(), T.preprocess_transform(PRE))
    a = [T.train_augment(AUG, seed=7)(image=img)["image"] for _ in range(2)]
    assert a[0].shape == img.shape and a[0].dtype == np.uint8
    assert np.array_equal(a[0], a[1])
    tf = T.train_augment(AUG, seed=7)
    draws = [tf(image=img)["image"] for _ in range(5)]
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])


def test_gauss_noise_maps_study_variance_to_std_fraction():
    noise = T.train_augment(AUG).transforms[2]
    lo, hi = noise.std_range
    assert lo == pytest.approx(math.sqrt(5) / 255) and hi == pytest.approx(math.sqrt(15) / 255)


def test_model_input_is_imagenet_normalised_three_channel_float():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(2, 1, 3, 1)
    out = T.to_model_input(x, "cpu")
    assert out.shape == (2, 3, 3, 2) and out.dtype == torch.float32
    for c, (m, s) in enumerate(zip(T.IMAGENET_MEAN, T.IMAGENET_STD)):
        assert out[0, c, 0, 0].item() == pytest.approx(-m / s, abs=1e-6)
        assert out[0, c, 0, 1].item() == pytest.approx((1 - m) / s, abs=1e-6)


def test_hide_lungs_sets_exactly_the_box_to_the_fill_and_leaves_the_rim():
    from stages.lib.params.schema import HideLungs

    h = HideLungs(top=0.25, bottom=0.75, left=0.125, right=0.5, fill=7)
    films = np.random.default_rng(0).integers(20, 250, (3, 16, 16), dtype=np.uint8)
    out = T.hide_lungs(films, h)
    assert (out[:, 4:12, 2:8] == 7).all()  # rows 16*0.25..16*0.75, columns 16*0.125..16*0.5
    box = np.zeros((16, 16), bool)
    box[4:12, 2:8] = True
    assert np.array_equal(out[:, ~box], films[:, ~box]) and np.array_equal(T.outside_mask(films.shape, h), ~box)
    assert films[:, box].min() >= 20  # the input is left as it was: a copy came back
    one = T.LungsHidden(h)(image=films[0])["image"]
    assert np.array_equal(one, out[0])  # the dataset's per-film form hides the same pixels


def test_the_default_box_hides_the_centre_of_a_cached_film():
    from stages.lib.params.schema import HideLungs

    rows, cols = T.lung_box((64, 64), HideLungs())
    assert (rows.start, rows.stop, cols.start, cols.stop) == (3, 61, 3, 61)  # 5% in from each edge
