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

from .errors import CheckpointError, MissingNetworkError, UnsupportedArchitectureError, brief
from .limits import MAX_ELEMENTS, MAX_NAME, MAX_TENSORS, check_budget, check_tensor_shapes
from .network_info import NvidiaNetwork
from .safe_pickle import NumpyArray
from .state_dict import config_from_state_dict

MAX_COMPONENT_DEPTH = 8  # Gs -> synthesis is 1 deep


def _tf_params(net, source: str) -> dict[str, np.ndarray]:
    params: dict[str, np.ndarray] = {}
    seen: set[int] = set()

    def recurse(prefix, n, depth):
        st = getattr(n, "state", None)
        if not isinstance(st, dict) or depth > MAX_COMPONENT_DEPTH or id(n) in seen:
            raise CheckpointError(f"{source}: malformed TF network record ({brief(prefix) if prefix else 'Gs'})")
        seen.add(id(n))
        variables = st.get("variables") or []
        if not isinstance(variables, (list, tuple)):
            raise CheckpointError(f"{source}: malformed TF variable list")
        for item in variables:
            if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                    and len(item[0]) <= MAX_NAME and isinstance(item[1], NumpyArray) and item[1].array is not None):
                raise CheckpointError(f"{source}: malformed TF variable list")
            if item[1].array.dtype.kind != "f":
                raise CheckpointError(f"{source}: TF variable {brief(item[0])} holds {item[1].array.dtype} values")
            params[prefix + item[0]] = item[1].array
            if len(params) > MAX_TENSORS:
                raise CheckpointError(f"{source}: more than {MAX_TENSORS} TF variables")
        components = st.get("components") or {}
        if not isinstance(components, dict) or not all(isinstance(k, str) for k in components):
            raise CheckpointError(f"{source}: malformed TF component list")
        for name, comp in components.items():
            recurse(f"{prefix}{name}/", comp, depth + 1)

    recurse("", net, 0)
    return params


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def _kwargs(state: dict, source) -> dict:
    kw = state.get("static_kwargs") or {}
    if not isinstance(kw, dict):
        raise CheckpointError(f"{source}: malformed TF static_kwargs")
    return kw


class _Variables:
    """The TF variables by name, handed out once each (checked for shape) so that leftovers can be reported."""

    def __init__(self, params: dict[str, np.ndarray], source: str):
        self.params, self.source, self.used = params, source, set()

    def __contains__(self, name: str) -> bool:
        return name in self.params

    def take(self, name: str, ndim: int | None = None) -> np.ndarray:
        if name not in self.params:
            raise UnsupportedArchitectureError(f"{self.source}: not a TF StyleGAN2 generator (no variable {name})")
        a = self.params[name]
        if ndim is not None and (a.ndim != ndim or (ndim and 0 in a.shape)):
            raise UnsupportedArchitectureError(f"{self.source}: TF variable {name} has shape {list(a.shape)}, "
                                               f"expected {ndim} non-empty dimensions")
        self.used.add(name)
        return a

    def check_all_used(self) -> None:
        left = sorted(set(self.params) - self.used)
        if left:
            raise UnsupportedArchitectureError(
                f"{self.source}: TF variables we cannot place ({brief(left[:5], depth=1)}); is this a StyleGAN2 "
                "(config-e/f) generator?"
            )


def _mapping(v: _Variables, sd: dict[str, torch.Tensor]) -> None:
    """``dlatent_avg`` and the ``mapping/`` variables into ``sd``."""
    sd["mapping.w_avg"] = _t(v.take("dlatent_avg", 1))
    i = 0
    while f"mapping/Dense{i}/weight" in v:
        sd[f"mapping.fc{i}.weight"] = _t(v.take(f"mapping/Dense{i}/weight", 2).T)
        sd[f"mapping.fc{i}.bias"] = _t(v.take(f"mapping/Dense{i}/bias", 1))
        i += 1
    if "mapping/LabelConcat/weight" in v:
        w = v.take("mapping/LabelConcat/weight", 2)  # [c_dim, embed]; non-empty, so embed is backed by data
        sd["mapping.embed.weight"] = _t(w.T)
        sd["mapping.embed.bias"] = torch.zeros(w.shape[1])


def _layer(v: _Variables, sd: dict[str, torch.Tensor], tf: str, ours: str, flip: bool = False) -> None:
    """One modulated conv (or ToRGB) layer's variables into ``sd``."""
    w = v.take(f"{tf}/weight", 4)
    if flip:
        w = w[::-1, ::-1]
    sd[f"{ours}.weight"] = _t(w.transpose(3, 2, 0, 1))
    sd[f"{ours}.bias"] = _t(v.take(f"{tf}/bias", 1))
    sd[f"{ours}.affine.weight"] = _t(v.take(f"{tf}/mod_weight", 2).T)
    sd[f"{ours}.affine.bias"] = _t(v.take(f"{tf}/mod_bias", 1) + 1)
    if f"{tf}/noise_strength" in v:
        strength = v.take(f"{tf}/noise_strength")
        if strength.size != 1:
            raise UnsupportedArchitectureError(f"{v.source}: {tf}/noise_strength is not a scalar")
        sd[f"{ours}.noise_strength"] = _t(strength).reshape([])


def _noise(v: _Variables, n: int) -> torch.Tensor:
    a = v.take(f"synthesis/noise{n}", 4)
    if a.shape[:2] != (1, 1):
        raise UnsupportedArchitectureError(f"{v.source}: synthesis/noise{n} has shape {list(a.shape)}")
    return _t(a[0, 0])


def _synthesis(v: _Variables, sd: dict[str, torch.Tensor]) -> None:
    """The ``synthesis/`` variables into ``sd``, block by block."""
    res = sorted({int(m.group(1)) for k in v.params if (m := re.match(r"synthesis/(\d{1,5})x\1/", k))})
    if not res or res != [2**k for k in range(2, res[-1].bit_length())]:
        raise UnsupportedArchitectureError(f"{v.source}: not a TF StyleGAN2 synthesis network (blocks {brief(res)})")
    sd["synthesis.b4.const"] = _t(v.take("synthesis/4x4/Const/const", 4)[0])
    _layer(v, sd, "synthesis/4x4/Conv", "synthesis.b4.conv1")
    sd["synthesis.b4.conv1.noise_const"] = _noise(v, 0)
    for r in res:
        pre = f"synthesis/{r}x{r}"
        if f"{pre}/ToRGB/weight" in v:
            _layer(v, sd, f"{pre}/ToRGB", f"synthesis.b{r}.torgb")
        if r == 4:
            continue
        k = int(np.log2(r))
        _layer(v, sd, f"{pre}/Conv0_up", f"synthesis.b{r}.conv0", flip=True)
        _layer(v, sd, f"{pre}/Conv1", f"synthesis.b{r}.conv1")
        sd[f"synthesis.b{r}.conv0.noise_const"] = _noise(v, 2 * k - 5)
        sd[f"synthesis.b{r}.conv1.noise_const"] = _noise(v, 2 * k - 4)
        if f"{pre}/Skip/weight" in v:
            sd[f"synthesis.b{r}.skip.weight"] = _t(v.take(f"{pre}/Skip/weight", 4)[::-1, ::-1].transpose(3, 2, 0, 1))


def _config_hints(Gs, source: str) -> tuple[float, str | None]:
    """``mapping_lrmul`` and ``architecture`` from ``Gs``'s static kwargs (over its synthesis component's)."""
    kw = dict(_kwargs(Gs.state, source))
    syn = (Gs.state.get("components") or {}).get("synthesis")
    if syn is not None:
        kw = {**_kwargs(syn.state, source), **kw}
    lr = kw.get("mapping_lrmul", 0.01)
    if not isinstance(lr, (int, float)) or isinstance(lr, bool):
        raise CheckpointError(f"{source}: mapping_lrmul is {brief(lr)}, not a number")
    arch = kw.get("architecture")
    if arch is not None and not isinstance(arch, str):
        raise CheckpointError(f"{source}: architecture is {brief(arch)}, not a name")
    return lr, arch


def extract_tf_generator(nets: tuple, source: str, budget: int = MAX_ELEMENTS) -> NvidiaNetwork:
    """``(G, D, Gs)`` TF network records -> :class:`~.network_info.NvidiaNetwork` built from ``Gs``.

    The variables' total size is checked against ``budget`` elements before they are converted, and the
    result against the inferred config before it is returned."""
    if len(nets) != 3:
        raise MissingNetworkError(f"{source}: a TF-era pickle should hold (G, D, Gs), found {len(nets)} networks")
    Gs = nets[2]
    p = _tf_params(Gs, source)
    check_budget([a.shape for a in p.values()], source, budget, "the TF variables")
    if "dlatent_avg" not in p or not any(k.startswith("synthesis/") for k in p):
        raise UnsupportedArchitectureError(
            f"{source}: not a TF StyleGAN2 generator (variables {brief(sorted(p)[:6], depth=1)})")
    v = _Variables(p, source)
    sd: dict[str, torch.Tensor] = {}
    _mapping(v, sd)
    _synthesis(v, sd)
    v.check_all_used()
    lr, arch = _config_hints(Gs, source)
    cfg = config_from_state_dict(sd, source, mapping_lr_multiplier=lr, conv_clamp=None, architecture=arch)
    check_tensor_shapes(sd, cfg, source, budget, error=UnsupportedArchitectureError)
    name = Gs.state.get("name", "Gs")
    return NvidiaNetwork(sd, cfg, "TF " + (name[:100] if isinstance(name, str) else "Gs"))
