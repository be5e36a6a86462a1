"""Batch augmentation on the device, so that a device-resident dataset never goes back to the host."""

from __future__ import annotations

import torch


def random_crop_flip(x: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """x: (B, C, H, W) -> same shape: a random H x W crop of the zero-padded image, flipped with p = 1/2.

    One gather for the whole batch; per-image offsets and flips drawn from ``generator``.
    """
    batch, _, height, width = x.shape
    padded = torch.nn.functional.pad(x, (padding,) * 4)
    dy = torch.randint(0, 2 * padding + 1, (batch,), device=x.device, generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (batch,), device=x.device, generator=generator)
    flip = torch.rand(batch, device=x.device, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(height, device=x.device)[None])  # (B, H)
    cols = dx[:, None] + torch.arange(width, device=x.device)[None]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_idx = torch.arange(batch, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch_idx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
