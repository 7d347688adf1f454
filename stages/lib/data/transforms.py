"""Every pixel operation in one place, so preprocessing, training and inference cannot drift.

- `preprocess_transform`: the study's deterministic base pipeline (CLAHE -> SmallestMaxSize ->
  CenterCrop -> Resize), run once per image by the preprocess stage and by `predict`.
- `train_augment`: the study's random augmentations, applied per epoch on the cached uint8 image.
- `to_model_input`: uint8 [B,1,S,S] -> normalised float [B,3,S,S] on the device, batched.
- `hide_lungs` (and `LungsHidden`, its per-image form for a dataset): the central box of params'
  `hide_lungs` set to one grey level, for the pixel shortcut and the lungs-hidden scores.
"""

from __future__ import annotations

import math

import albumentations as A
import cv2
import numpy as np
import torch

from stages.lib.params.schema import Augment, HideLungs, Preprocess

# ImageNet statistics: the backbones are ImageNet-pretrained and see the gray image on 3 channels.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def crop_size(img_size: int, center_crop_ratio: float) -> int:
    return int(img_size * center_crop_ratio)


def preprocess_transform(p: Preprocess) -> A.Compose:
    """The study's base preprocessing; `p` is params.yaml's `preprocess` section.

    As in the study, SmallestMaxSize scales the short side to img_size, the centre crop keeps
    `center_crop_ratio` of that, and Resize brings the crop back to img_size.
    """
    size, crop = p.img_size, crop_size(p.img_size, p.center_crop_ratio)
    clip, tiles = p.clahe_clip_limit, p.clahe_tile_grid
    return A.Compose(
        [
            # A fixed (clip, clip) range: a bare float makes albumentations sample clip in [1, clip],
            # which would make the cached images random.
            A.CLAHE(clip_limit=(clip, clip), tile_grid_size=(tiles, tiles), p=1.0),
            A.SmallestMaxSize(max_size=max(size, crop)),
            A.CenterCrop(height=crop, width=crop),
            A.Resize(size, size),
        ]
    )


def train_augment(a: Augment, seed: int | None = None) -> A.Compose:
    """The study's train-time augmentation in albumentations 2.x; `a` is params.yaml's `augment`.

    Mapping from the study's albumentations 1.x calls:
    - ShiftScaleRotate(shift_limit, scale_limit, rotate_limit, border_mode) is deprecated ->
      Affine(translate_percent=±shift_limit, scale=1±scale_limit, rotate=±rotate_limit, same border).
    - GaussNoise(var_limit=(5, 15)) in pixel variance -> GaussNoise(std_range) as a fraction of
      255: std = sqrt(variance) / 255, i.e. (0.0088, 0.0152). 2.x samples the std uniformly where
      1.x sampled the variance; the range is the same.
    - RandomBrightnessContrast and HorizontalFlip are unchanged.
    """
    var_lo, var_hi = a.noise_var_limit
    return A.Compose(
        [
            A.Affine(
                translate_percent=(-a.shift_limit, a.shift_limit),
                scale=(1 - a.scale_limit, 1 + a.scale_limit),
                rotate=(-a.rotate_limit, a.rotate_limit),
                border_mode=cv2.BORDER_REFLECT,
                p=a.affine_p,
            ),
            A.RandomBrightnessContrast(
                brightness_limit=a.brightness_limit,
                contrast_limit=a.contrast_limit,
                p=a.brightness_contrast_p,
            ),
            A.GaussNoise(std_range=(math.sqrt(var_lo) / 255, math.sqrt(var_hi) / 255), p=a.noise_p),
            A.HorizontalFlip(p=a.hflip_p),
        ],
        seed=seed,
    )


def preprocess_image(gray: np.ndarray, transform: A.Compose) -> np.ndarray:
    """Apply the base pipeline to one uint8 grayscale image; returns uint8 [S, S]."""
    return transform(image=gray)["image"]


def to_model_input(x: torch.Tensor, device: torch.device | str, channels_last: bool = False) -> torch.Tensor:
    """uint8 [B,1,S,S] -> float [B,3,S,S] normalised with ImageNet statistics, on `device`.

    Done batched after the host-to-device copy: moving uint8 is 4x less traffic than float. One
    fused multiply-add computes (x / 255 - mean) / std and broadcasts the gray channel to three
    (3.7x faster on CPU than dividing, expanding and normalising step by step; measured).
    """
    x = x.to(device, non_blocking=True).float()
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    x = torch.addcmul(-mean / std, x, 1 / (255 * std))
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def lung_box(shape: tuple[int, ...], h: HideLungs) -> tuple[slice, slice]:
    """The rows and columns of films of `shape` [..., H, W] that `h` hides, each edge rounded to a pixel."""
    height, width = shape[-2:]
    return slice(round(h.top * height), round(h.bottom * height)), slice(round(h.left * width), round(h.right * width))


def hide_lungs(images: np.ndarray, h: HideLungs) -> np.ndarray:
    """A copy of uint8 films [..., H, W] with the box of `h` (params' `hide_lungs`) set to `h.fill`."""
    out = np.array(images, dtype=np.uint8, copy=True)
    rows, cols = lung_box(out.shape, h)
    out[..., rows, cols] = h.fill
    return out


def outside_mask(shape: tuple[int, ...], h: HideLungs) -> np.ndarray:
    """bool [H, W]: True on the pixels `h` leaves visible."""
    mask = np.ones(shape[-2:], dtype=bool)
    rows, cols = lung_box(shape, h)
    mask[rows, cols] = False
    return mask


class LungsHidden:
    """`hide_lungs` for one film, called as a dataset calls its augmentation (`t(image=img)["image"]`)."""

    def __init__(self, h: HideLungs):
        self.h = h

    def __call__(self, image: np.ndarray) -> dict:
        return {"image": hide_lungs(image, self.h)}
