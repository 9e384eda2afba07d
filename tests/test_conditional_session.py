"""DragSession on a class-conditional generator (c_dim > 0): the label ``c`` in the API, in saved sessions and on
both back-ends. The official DragGAN code passes the all-zeros label; ``c=None`` is that label here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_tiny_generator

from dragnb.session import DragSession


@pytest.fixture(scope="module")
def cond_generator():
    return make_tiny_generator(c_dim=4)


def _ws(G, seed, label):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        return G.mapping(z, torch.tensor([label], dtype=torch.float32), truncation_psi=0.7).numpy()


def test_label_forms(cond_generator):
    G = cond_generator
    zeros, two = [0.0, 0, 0, 0], [0.0, 0, 1, 0]
    s = DragSession(G, seed=3)  # None: the all-zeros label, as the official code
    assert s.class_index is None and s.c.tolist() == zeros
    np.testing.assert_array_equal(s.ws, _ws(G, 3, zeros))
    for c in (2, np.int64(2), two, np.array(two), np.array([two])):
        t = DragSession(G, seed=3, c=c)
        assert t.class_index == 2 and t.c.tolist() == two
        np.testing.assert_array_equal(t.ws, _ws(G, 3, two))
    assert not np.array_equal(s.image, t.image)


@pytest.mark.parametrize("bad, err", [
    (4, ValueError), (-1, ValueError), ([1, 1, 0, 0], ValueError), ([0.5, 0, 0, 0], ValueError),
    ([1, 0, 0], ValueError), ([[1, 0], [0, 0]], ValueError), ("2", TypeError), (2.0, TypeError), (True, TypeError),
    ([np.nan, 0, 0, 0], ValueError), ({"class": 2}, TypeError),
])
def test_bad_labels_are_refused(cond_generator, bad, err):
    with pytest.raises(err):
        DragSession(cond_generator, seed=0, c=bad)
    s = DragSession(cond_generator, seed=0, c=1)
    s.add_point(handle=(30, 30), target=(36, 30))
    before = (s.c, s.ws, s.target_points)
    with pytest.raises(err):
        s.set_class(bad)
    assert np.array_equal(s.c, before[0]) and np.array_equal(s.ws, before[1]) and s.target_points == before[2]


def test_unconditional_models_take_no_label(tiny_generator):
    with pytest.raises(ValueError, match="unconditional"):
        DragSession(tiny_generator, seed=0, c=0)
    s = DragSession(tiny_generator, seed=0)
    assert s.c.shape == (0,) and s.class_index is None
    with pytest.raises(ValueError, match="unconditional"):
        s.set_class(1)


def test_set_class_is_a_new_image_and_sessions_keep_it(cond_generator, tmp_path):
    s = DragSession(cond_generator, seed=5, c=1)
    s.add_point(handle=(30, 30), target=(36, 30))
    s.step()
    s.set_class(3)
    assert s.class_index == 3 and s.target_points == [] and s.num_steps == 0 and not s.can_undo
    np.testing.assert_array_equal(s.ws, _ws(cond_generator, 5, [0, 0, 0, 1]))
    s.set_seed(6)  # the label stays
    np.testing.assert_array_equal(s.ws, _ws(cond_generator, 6, [0, 0, 0, 1]))
    s.add_point(handle=(30, 30), target=(36, 30))
    s.step()
    s.save(tmp_path / "sess")
    t = DragSession.load(tmp_path / "sess")
    assert t.class_index == 3 and np.array_equal(t.ws, s.ws)
    assert t.step().loss == s.step().loss
    assert "class=3" in repr(t)


def test_ort_back_end_on_a_conditional_model(cond_generator):
    pytest.importorskip("onnxruntime")
    a = DragSession(cond_generator, seed=2, c=2)
    b = DragSession(cond_generator, seed=2, c=2, backend="ort")
    for s in (a, b):
        s.add_point(handle=(30, 30), target=(36, 30))
    ra, rb = [a.step() for _ in range(3)], [b.step() for _ in range(3)]
    np.testing.assert_allclose([r.loss for r in ra], [r.loss for r in rb], rtol=1e-5)
    # The artifact folder alone (no torch model): its mapping graph takes the label.
    c = DragSession(b.ort_artifacts, seed=2, c=2)
    np.testing.assert_allclose(c._ws_seed, a._ws_seed, rtol=0, atol=1e-5)
    assert c.class_index == 2
    with pytest.raises(ValueError):
        c.set_class(7)
