"""The image version of the Eureka task and the local image-file loaders it needs.

An input is a 2x2 grid of tiles: indicators top-left and bottom-right (digits 1 or 2), targets top-right (T1) and
bottom-left (T2); the label is T1's class if the indicators show the same digit, else T2's (the paper's main
dataset, with scikit-learn's bundled 8x8 digits by default so nothing is downloaded). A ViT reads it through a
patch embedding. MNIST and Fashion-MNIST can be used instead from local files (idx, optionally gzipped, or npz).
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

INDICATOR_DIGITS = (1, 2)
SPLIT_SEED = 12345  # fixed train/val split of the bundled digits: validation tiles are never seen in training
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


@dataclass
class ImageSplit:
    images: torch.Tensor  # (N, h, w) float in [0, 1]
    labels: torch.Tensor  # (N,) int64


# ---- loaders ---------------------------------------------------------------------------------------------------------


def load_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST format; gzipped if the name ends in .gz) as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not an unsigned-byte idx file (magic {data[:4].hex()})")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape}, file holds {array.size} values")
    return array.reshape(shape)


def load_image_folder(folder: Path) -> tuple[ImageSplit, ImageSplit]:
    """(train, test) from a folder holding the four MNIST-style idx files (plain or .gz) or one .npz with
    x_train, y_train, x_test, y_test (the Keras layout). Pixels are scaled to [0, 1]."""
    folder = Path(folder)
    arrays: dict[str, np.ndarray] = {}
    npz = sorted(folder.glob("*.npz"))
    if npz:
        with np.load(npz[0]) as f:
            missing = [k for k in IDX_NAMES if k not in f]
            if missing:
                raise ValueError(f"{npz[0]} lacks arrays {missing}; needs x_train, y_train, x_test, y_test")
            arrays = {k: f[k] for k in IDX_NAMES}
    else:
        for key, stem in IDX_NAMES.items():
            found = [p for p in (folder / stem, folder / f"{stem}.gz") if p.exists()]
            if not found:
                raise FileNotFoundError(f"{folder} has neither {stem}.npz-style data nor {stem}[.gz]")
            arrays[key] = load_idx(found[0])

    def split(x: np.ndarray, y: np.ndarray) -> ImageSplit:
        return ImageSplit(torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64)))

    return split(arrays["x_train"], arrays["y_train"]), split(arrays["x_test"], arrays["y_test"])


def load_source(source: str, data_dir: str) -> tuple[tuple[ImageSplit, ImageSplit], tuple[ImageSplit, ImageSplit]]:
    """((indicator train, val), (target train, val)) for task.image_source; mnist/fashion_mnist read local files
    from data_dir/mnist and data_dir/fashion_mnist (indicators are always digits, as in the paper)."""
    if source == "digits":
        digits = load_digits_split()
        return digits, digits
    if not data_dir:
        raise ValueError(f"task.image_source {source!r} reads local files: set task.data_dir to the folder holding "
                         "mnist/ (and fashion_mnist/)")
    mnist = load_image_folder(Path(data_dir) / "mnist")
    if source == "mnist":
        return mnist, mnist
    if source == "fashion_mnist":
        return mnist, load_image_folder(Path(data_dir) / "fashion_mnist")
    raise ValueError(f"task.image_source is {source!r}; allowed: digits, mnist, fashion_mnist")


def load_digits_split() -> tuple[ImageSplit, ImageSplit]:
    """scikit-learn's bundled 8x8 digits (1797 images, 0..16 scaled to [0, 1]), split 80/20 with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)  # (1797, 8, 8)
    labels = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(SPLIT_SEED))
    cut = int(0.8 * len(labels))
    train, val = order[:cut], order[cut:]
    return ImageSplit(images[train], labels[train]), ImageSplit(images[val], labels[val])


# ---- the task --------------------------------------------------------------------------------------------------------


class ImageTask:
    """Samples 2x2-tile images from one split: indicators from `indicators` (digits 1/2), targets from `targets`."""

    def __init__(self, indicators: ImageSplit, targets: ImageSplit, p_match: float) -> None:
        keep = (indicators.labels == INDICATOR_DIGITS[0]) | (indicators.labels == INDICATOR_DIGITS[1])
        self.ind_images, self.ind_labels = indicators.images[keep], indicators.labels[keep]
        self.targets = targets
        self.p_match = p_match
        self.by_value = [torch.nonzero(self.ind_labels == d).squeeze(1) for d in INDICATOR_DIGITS]
        tile = targets.images.shape[1:]
        if self.ind_images.shape[1:] != tile:
            raise ValueError(f"indicator tiles {tuple(self.ind_images.shape[1:])} differ from target tiles {tile}")
        if len(self.by_value[0]) == 0 or len(self.by_value[1]) == 0:
            raise ValueError("the indicator images contain no digit 1 or no digit 2")
        self.tile = int(tile[0])

    def sample(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """images (n, 2*tile, 2*tile) and labels (n,)."""
        a = torch.randint(0, 2, (n,), generator=g)  # indicator value 0 -> digit 1, 1 -> digit 2
        match = torch.rand(n, generator=g) < self.p_match
        b = torch.where(match, a, 1 - a)
        top_left, bottom_right = self._indicator(a, g), self._indicator(b, g)  # (n, t, t)
        i1 = torch.randint(0, len(self.targets.labels), (n,), generator=g)
        i2 = torch.randint(0, len(self.targets.labels), (n,), generator=g)
        top = torch.cat([top_left, self.targets.images[i1]], dim=2)  # (n, t, 2t)
        bottom = torch.cat([self.targets.images[i2], bottom_right], dim=2)  # (n, t, 2t)
        labels = torch.where(match, self.targets.labels[i1], self.targets.labels[i2])
        return torch.cat([top, bottom], dim=1), labels  # (n, 2t, 2t), (n,)

    def _indicator(self, value: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        pick = torch.randint(0, 2**62, value.shape, generator=g)
        pools = [self.by_value[0], self.by_value[1]]
        index = torch.where(value == 0, pools[0][pick % len(pools[0])], pools[1][pick % len(pools[1])])
        return self.ind_images[index]  # (n, t, t)


class PatchEmbed(nn.Module):
    """ViT input: split (B, S, S) images into p x p patches, project each to C, prepend a learned CLS token."""

    def __init__(self, image_size: int, patch: int, width: int) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"task.patch_size {patch} must divide the image side {image_size}")
        self.patch = patch
        self.n_patches = (image_size // patch) ** 2
        self.proj = nn.Linear(patch * patch, width)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        nn.init.normal_(self.cls, std=0.02)  # timm ViT's CLS init; runs inside the trial's seeded model init

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        B, S, _ = images.shape
        p = self.patch
        patches = images.view(B, S // p, p, S // p, p).permute(0, 1, 3, 2, 4).reshape(B, -1, p * p)  # (B, N, p*p)
        return torch.cat([self.cls.expand(B, 1, -1), self.proj(patches)], dim=1)  # (B, N + 1, C)
