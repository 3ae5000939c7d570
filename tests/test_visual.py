"""Crop strips (esc_arch/basicsr_plugin/visual.py): LR nearest | bicubic | ESC | HR on the most detailed region."""

import cv2
import numpy as np
import pytest

from esc_arch.basicsr_plugin.visual import crop_strip, detail_window


def test_crop_strip_shows_the_most_detailed_region():
    hr = np.full((128, 160, 3), 120, np.uint8)
    hr[64:96, 96:128] = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert detail_window(hr, 32, 2) == (64, 96)
    lq = cv2.resize(hr, (80, 64), interpolation=cv2.INTER_AREA)
    out = cv2.resize(lq, (160, 128), interpolation=cv2.INTER_CUBIC)
    strip = crop_strip(lq, out, hr, scale=2, size=32, zoom=2)
    assert strip.shape == (18 + 64, 4 * 64 + 3 * 4, 3)
    esc_panel = strip[18:, 2 * (64 + 4) : 2 * (64 + 4) + 64]
    expected = cv2.resize(out[64:96, 96:128], (64, 64), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(esc_panel, expected)
    hr_panel = strip[18:, 3 * (64 + 4) :]
    np.testing.assert_array_equal(hr_panel, cv2.resize(hr[64:96, 96:128], (64, 64), interpolation=cv2.INTER_NEAREST))
    assert crop_strip(lq, out, None, scale=2, size=32).shape[1] == 3 * 64 + 2 * 4  # no HR: three panels
    with pytest.raises(ValueError, match="not 2x"):
        crop_strip(lq, out[:-2], hr, scale=2)
