"""Preprocessing, defined once: every checkpoint and exported artifact carries these numbers.

uint8 N×H×W×C images → float32 N×C×H×W: scale to [0, 1], convert channels, resize (bilinear,
antialiased), then (x − mean) / std per channel. The device runner receives already
preprocessed samples, so this module may use torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Preprocess:
    image_size: int  # square side after resizing
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Preprocess:
        return cls(int(d["image_size"]), int(d["channels"]), tuple(d["mean"]), tuple(d["std"]))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)


def to_unit_nchw(images: np.ndarray, image_size: int, channels: int, batch: int = 4096) -> torch.Tensor:
    """uint8 N×H×W×C → float32 N×C×S×S in [0, 1], before normalisation (statistics are taken here)."""
    out = []
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).permute(0, 3, 1, 2).float() / 255.0
        if x.shape[1] != channels:
            if channels == 3:
                x = x.expand(-1, 3, -1, -1)
            else:  # ITU-R 601 luma, as PIL's convert("L")
                x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if x.shape[-1] != image_size or x.shape[-2] != image_size:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)
        out.append(x.contiguous())
    return torch.cat(out) if out else torch.zeros(0, channels, image_size, image_size)


def normalise(x: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    mean = torch.tensor(pre.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of an N×C×H×W batch in [0, 1]."""
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std)
