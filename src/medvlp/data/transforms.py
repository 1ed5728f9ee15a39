"""Turn one numpy image into the tensor a backbone expects.

:class:`Preprocess` is deterministic (evaluation); :class:`TrainAugment` adds random-resized-crop
(and optional flip / rotation) drawing *only* from torch's global RNG, so a resumed run that
restores ``torch.get_rng_state()`` reproduces the same augmentations.

Horizontal flip is off by default: in chest imaging laterality carries meaning (heart on the
left, situs inversus, dextrocardia, side-specific findings and markers), so a flipped chest
radiograph is a different, implausible image rather than an equivalent view.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: ITU-R BT.601 luma weights (the same as Pillow's RGB -> "L").
LUMA = (0.299, 0.587, 0.114)
_FLOAT_TOL = 1e-3


class Preprocess:
    """np image -> float32 tensor (C, H, W), or (C, D, H, W) when ``is_3d``.

    Steps: uint8 -> x / 255 (float input must already be in [0, 1]); grayscale -> repeated to 3
    channels or RGB -> 1 channel by luma when ``in_chans`` asks; resize to ``img_size`` (square;
    bilinear with antialiasing, trilinear for 3D) when the size differs; ``(x - mean) / std`` per
    channel.
    """

    def __init__(self, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 is_3d: bool = False):
        self.img_size = int(img_size)
        self.in_chans = int(in_chans)
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        self.is_3d = is_3d
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        for what, v in (("mean", self.mean), ("std", self.std)):
            if len(v) not in (1, self.in_chans):
                raise ValueError(f"{what} has {len(v)} values for in_chans={in_chans}")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be > 0, got {self.std}")

    @classmethod
    def from_dict(cls, d: dict[str, Any], is_3d: bool = False) -> "Preprocess":
        """From a backbone's ``preprocess`` dict (keys img_size, in_chans, mean, std)."""
        missing = [k for k in ("img_size", "in_chans", "mean", "std") if k not in d]
        if missing:
            raise ValueError(f"preprocess dict is missing {missing}: {d}")
        return cls(d["img_size"], d["in_chans"], d["mean"], d["std"], is_3d=is_3d)

    def to_dict(self) -> dict[str, Any]:
        return {"img_size": self.img_size, "in_chans": self.in_chans, "mean": list(self.mean),
                "std": list(self.std)}

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        return self.normalize(self.resize(self.to_tensor(img)))

    def to_tensor(self, img: np.ndarray) -> torch.Tensor:
        """Scale to [0, 1] float32, channels first, with ``in_chans`` channels."""
        a = np.asarray(img)
        if a.dtype == np.uint8:
            x = torch.from_numpy(a.astype(np.float32) / 255.0)
        elif np.issubdtype(a.dtype, np.floating):
            lo, hi = float(a.min()), float(a.max())
            if lo < -_FLOAT_TOL or hi > 1 + _FLOAT_TOL:
                raise ValueError(f"float image has values in [{lo:.3g}, {hi:.3g}]; expected "
                                 "[0, 1] (apply a CT window to Hounsfield units first)")
            x = torch.from_numpy(a.astype(np.float32))
        else:
            raise ValueError(f"unsupported image dtype {a.dtype}; expected uint8 or float [0, 1]")
        if self.is_3d:
            if x.ndim != 3:
                raise ValueError(f"3D image must be (D, H, W), got shape {tuple(x.shape)}")
            x = x[None]
        elif x.ndim == 2:
            x = x[None]
        elif x.ndim == 3 and x.shape[-1] in (1, 3, 4):
            x = x[..., :3].permute(2, 0, 1)  # an alpha channel carries no image content
        else:
            raise ValueError(f"image must be (H, W) or (H, W, C), got shape {tuple(x.shape)}")
        c = x.shape[0]
        if c == self.in_chans:
            return x.contiguous()
        if c == 1:
            return x.expand(self.in_chans, *x.shape[1:]).contiguous()
        w = torch.tensor(LUMA, dtype=x.dtype).view(3, *([1] * (x.ndim - 1)))
        return (x * w).sum(0, keepdim=True)

    def resize(self, x: torch.Tensor, size: int | None = None) -> torch.Tensor:
        s = self.img_size if size is None else size
        target = (s,) * (x.ndim - 1)
        if tuple(x.shape[1:]) == target:
            return x
        if self.is_3d:
            return F.interpolate(x[None], size=target, mode="trilinear", align_corners=False)[0]
        return F.interpolate(x[None], size=target, mode="bilinear", align_corners=False,
                             antialias=True)[0]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (x.ndim - 1)
        mean = torch.tensor(self.mean, dtype=x.dtype).view(shape)
        std = torch.tensor(self.std, dtype=x.dtype).view(shape)
        return (x - mean) / std

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_dict()})"


class TrainAugment(Preprocess):
    """Random-resized-crop (area ``scale``, aspect ``ratio``), optional horizontal flip and
    rotation by U(-rotate_deg, rotate_deg), then resize and normalise like :class:`Preprocess`.

    All randomness comes from torch's global RNG (``torch.rand``), never numpy or Python's.
    2D only.
    """

    def __init__(self, img_size: int, in_chans: int, mean: Sequence[float], std: Sequence[float],
                 scale: tuple[float, float] = (0.7, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = False,
                 rotate_deg: float = 0.0):
        super().__init__(img_size, in_chans, mean, std, is_3d=False)
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < lo <= hi <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < lo <= hi, got {ratio}")
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.hflip, self.rotate_deg = hflip, float(rotate_deg)

    def __call__(self, img: np.ndarray) -> torch.Tensor:
        x = self.to_tensor(img)
        top, left, h, w = self._crop_box(x.shape[-2], x.shape[-1])
        x = self.resize(x[:, top:top + h, left:left + w])
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        if self.rotate_deg > 0:
            angle = (torch.rand(()) * 2 - 1) * self.rotate_deg
            x = _rotate(x, float(angle))
        return self.normalize(x)

    def _crop_box(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Same sampling as torchvision's RandomResizedCrop: 10 tries, then a centre crop."""
        area = height * width
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio)))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, ()))
                left = int(torch.randint(0, width - w + 1, ()))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "scale": list(self.scale), "ratio": list(self.ratio),
                "hflip": self.hflip, "rotate_deg": self.rotate_deg}


def _rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (C, H, W) about its centre; corners are filled from the border (no black wedges)."""
    t = math.radians(degrees)
    theta = torch.tensor([[math.cos(t), -math.sin(t), 0.0], [math.sin(t), math.cos(t), 0.0]],
                         dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode="bilinear", padding_mode="border",
                         align_corners=False)[0]
