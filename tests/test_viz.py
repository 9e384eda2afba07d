"""dragnb.viz: the small image helpers of the notebooks."""

from __future__ import annotations

import numpy as np

from dragnb.viz import LABEL_HEIGHT, image_grid


def test_image_grid_tiles_and_labels():
    a, b = np.zeros((8, 40, 3), np.uint8), np.full((8, 40, 3), 100, np.uint8)
    grid = image_grid([a, b, a], cols=2, pad=2)
    assert grid.shape == (18, 82, 3) and (grid[:8, 42:] == 100).all() and (grid[10:, 42:] == 255).all()
    labelled = image_grid([a, b], cols=2, pad=2, labels=["psi 0", ""])
    assert labelled.shape == (8 + LABEL_HEIGHT, 82, 3)
    strip = labelled[8:]
    assert (strip[:, :40] < 128).any() and (strip[:, 42:] == 255).all()  # text under the first tile only
    np.testing.assert_array_equal(labelled[:8], grid[:8])
