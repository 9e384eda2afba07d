"""TensorFlow-era StyleGAN2 pickles (``stylegan2-*-config-f.pkl``): a tuple ``(G, D, Gs)`` of
``dnnlib.tflib.network.Network`` states, read by the same allowlist unpickler (nothing executed;
``build_module_src`` is ignored).

Each state holds ``variables`` (a list of ``(name, ndarray)``) and ``components`` (``mapping``,
``synthesis``: nested states). We use ``Gs`` (the moving average). Names, with prefixes from the
component keys, map to ours as follows (TF dense weights are [in, out], conv weights [kh, kw, in, out]):

* ``dlatent_avg`` -> ``mapping.w_avg``; ``mapping/Dense{i}/weight|bias`` -> ``mapping.fc{i}`` (transpose);
  ``mapping/LabelConcat/weight`` -> ``mapping.embed.weight`` (transpose; zero bias);
* ``synthesis/4x4/Const/const`` [1, C, 4, 4] -> ``synthesis.b4.const`` (first item);
* ``synthesis/{r}x{r}/{Conv|Conv0_up|Conv1|ToRGB}/{weight,bias,mod_weight,mod_bias,noise_strength}`` ->
  ``b4.conv1`` / ``b{r}.conv0`` / ``b{r}.conv1`` / ``b{r}.torgb``: weight transposed to (3, 2, 0, 1) and,
  for the up-sampling conv, flipped spatially; ``mod_weight`` transposed into ``affine.weight``;
  ``mod_bias + 1`` into ``affine.bias`` (TF adds the 1 at run time, NVIDIA's PyTorch code stores it);
* ``synthesis/{r}x{r}/Skip/weight`` -> ``b{r}.skip.weight`` (flipped, transposed; resnet);
* ``synthesis/noise{n}`` [1, 1, r, r] -> ``noise_const``: n = 0 for ``b4.conv1``, 2k-5 / 2k-4 for
  ``b{2^k}.conv0`` / ``.conv1``.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from .errors import CheckpointError, MissingNetworkError, UnsupportedArchitectureError
from .network_info import NvidiaNetwork
from .safe_pickle import NumpyArray
from .state_dict import config_from_state_dict


def _tf_params(net, source: str) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}

    def recurse(prefix, n):
        st = getattr(n, "state", None)
        if not isinstance(st, dict):
            raise CheckpointError(f"{source}: malformed TF network record")
        for item in st.get("variables") or []:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and isinstance(item[1], NumpyArray) and item[1].array is not None):
                raise CheckpointError(f"{source}: malformed TF variable list")
            params[prefix + item[0]] = item[1].array
        for name, comp in (st.get("components") or {}).items():
            recurse(f"{prefix}{name}/", comp)

    recurse("", net)
    return params


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def extract_tf_generator(nets: tuple, source: str):
    """``(G, D, Gs)`` TF network records -> :class:`~.network_info.NvidiaNetwork` built from ``Gs``."""
    if len(nets) != 3:
        raise MissingNetworkError(f"{source}: a TF-era pickle should hold (G, D, Gs), found {len(nets)} networks")
    Gs = nets[2]
    p = _tf_params(Gs, source)
    used: set[str] = set()

    def take(name):
        used.add(name)
        return p[name]

    sd: dict[str, torch.Tensor] = {}
    if "dlatent_avg" not in p or not any(k.startswith("synthesis/") for k in p):
        raise UnsupportedArchitectureError(f"{source}: not a TF StyleGAN2 generator (variables {sorted(p)[:6]})")
    sd["mapping.w_avg"] = _t(take("dlatent_avg"))
    i = 0
    while f"mapping/Dense{i}/weight" in p:
        sd[f"mapping.fc{i}.weight"] = _t(take(f"mapping/Dense{i}/weight").T)
        sd[f"mapping.fc{i}.bias"] = _t(take(f"mapping/Dense{i}/bias"))
        i += 1
    if "mapping/LabelConcat/weight" in p:
        w = take("mapping/LabelConcat/weight")  # [c_dim, embed]
        sd["mapping.embed.weight"] = _t(w.T)
        sd["mapping.embed.bias"] = torch.zeros(w.shape[1])

    def layer(tf: str, ours: str, flip: bool = False):
        w = take(f"{tf}/weight")
        if flip:
            w = w[::-1, ::-1]
        sd[f"{ours}.weight"] = _t(w.transpose(3, 2, 0, 1))
        sd[f"{ours}.bias"] = _t(take(f"{tf}/bias"))
        sd[f"{ours}.affine.weight"] = _t(take(f"{tf}/mod_weight").T)
        sd[f"{ours}.affine.bias"] = _t(take(f"{tf}/mod_bias") + 1)
        if f"{tf}/noise_strength" in p:
            sd[f"{ours}.noise_strength"] = _t(take(f"{tf}/noise_strength")).reshape([])

    res = sorted({int(m.group(1)) for k in p if (m := re.match(r"synthesis/(\d+)x\1/", k))})
    sd["synthesis.b4.const"] = _t(take("synthesis/4x4/Const/const")[0])
    layer("synthesis/4x4/Conv", "synthesis.b4.conv1")
    sd["synthesis.b4.conv1.noise_const"] = _t(take("synthesis/noise0")[0, 0])
    for r in res:
        pre = f"synthesis/{r}x{r}"
        if f"{pre}/ToRGB/weight" in p:
            layer(f"{pre}/ToRGB", f"synthesis.b{r}.torgb")
        if r == 4:
            continue
        k = int(np.log2(r))
        layer(f"{pre}/Conv0_up", f"synthesis.b{r}.conv0", flip=True)
        layer(f"{pre}/Conv1", f"synthesis.b{r}.conv1")
        sd[f"synthesis.b{r}.conv0.noise_const"] = _t(take(f"synthesis/noise{2 * k - 5}")[0, 0])
        sd[f"synthesis.b{r}.conv1.noise_const"] = _t(take(f"synthesis/noise{2 * k - 4}")[0, 0])
        if f"{pre}/Skip/weight" in p:
            sd[f"synthesis.b{r}.skip.weight"] = _t(take(f"{pre}/Skip/weight")[::-1, ::-1].transpose(3, 2, 0, 1))
    left = sorted(set(p) - used)
    if left:
        raise UnsupportedArchitectureError(
            f"{source}: TF variables we cannot place ({left[:5]}); is this a StyleGAN2 (config-e/f) generator?"
        )
    kw = {**(Gs.state.get("static_kwargs") or {})}
    syn_kw = ((Gs.state.get("components") or {}).get("synthesis"))
    if syn_kw is not None:
        kw = {**(syn_kw.state.get("static_kwargs") or {}), **kw}
    cfg = config_from_state_dict(sd, source, mapping_lr_multiplier=float(kw.get("mapping_lrmul", 0.01)),
                                 conv_clamp=None, architecture=kw.get("architecture"))
    return NvidiaNetwork(sd, cfg, "TF " + str(Gs.state.get("name", "Gs")))
