import torch

from losstopo.augment import random_crop_flip


def test_crop_without_padding_is_identity_or_flip():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = random_crop_flip(x, padding=0, generator=torch.Generator().manual_seed(0))
    for i in range(2):
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))


def test_crop_is_a_shifted_window_of_the_padded_image():
    x = torch.randn(64, 3, 8, 8)
    out = random_crop_flip(x, padding=2, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    seen_flip = seen_shift = False
    for i in range(64):
        windows = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                   if torch.equal(out[i], (lambda w: w.flip(-1) if f else w)(padded[i, :, dy:dy + 8, dx:dx + 8]))]
        assert windows, f"image {i} is not a crop of its padded original"
        seen_flip |= any(f for _, _, f in windows)
        seen_shift |= any((dy, dx) != (2, 2) for dy, dx, _ in windows)
    assert seen_flip and seen_shift
