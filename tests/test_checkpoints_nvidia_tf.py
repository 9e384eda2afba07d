"""TF-era (G, D, Gs) pickles: structure-faithful fakes load into the same generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nvidia_fakes import dump, random_generator, tf_pickle_tuple

from dragnb.checkpoints.errors import UnsupportedArchitectureError
from dragnb.checkpoints.foreign import load_any

torch.set_num_threads(1)


@pytest.mark.parametrize("kw", [dict(), dict(architecture="resnet"), dict(architecture="orig")])
def test_tf_pickle_round_trip(tmp_path, kw):
    G = random_generator(**kw)
    path = tmp_path / "tf.pkl"
    path.write_bytes(dump(tf_pickle_tuple(G), 4))
    G2 = load_any(path)
    assert G2.cfg.to_dict() == G.cfg.to_dict()
    z = torch.from_numpy(np.random.RandomState(0).randn(2, G.z_dim)).float()
    with torch.no_grad():
        assert torch.equal(G(z, truncation_psi=0.7), G2(z, truncation_psi=0.7))


def test_tf_pickle_with_unknown_variables(tmp_path):
    nets = tf_pickle_tuple(random_generator())
    nets[2].components["synthesis"].variables.append(("lod", np.zeros((), np.float32)))
    path = tmp_path / "tf.pkl"
    path.write_bytes(dump(nets, 4))
    with pytest.raises(UnsupportedArchitectureError, match="lod"):
        load_any(path)
