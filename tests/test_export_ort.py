"""ONNX inference export matches PyTorch; ORT can train through the generator (smoke test)."""

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from dragnb.drag import core
from dragnb.export import OnnxGenerator, export_mapper, export_synthesis
from dragnb.stylegan import Generator, GeneratorConfig

torch.set_num_threads(1)


def make(arch="skip", **kw):
    torch.manual_seed(0)
    cfg = GeneratorConfig(z_dim=8, w_dim=16, img_resolution=32, channel_base=256, channel_max=32, mapping_layers=2,
                          architecture=arch, **kw)
    G = Generator(cfg).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
        G.mapping.w_avg.normal_()
    return G


@pytest.mark.parametrize("arch,kw", [("skip", {}), ("resnet", {"conv_clamp": 256.0}), ("orig", {"img_width": 16})])
def test_inference_export_matches_torch(tmp_path, arch, kw):
    G = make(arch, **kw)
    og = OnnxGenerator(export_mapper(G, tmp_path / "m.onnx"), export_synthesis(G, tmp_path / "s.onnx"))
    z = np.random.RandomState(71).randn(3, 8)
    ws = og.mapping(z, 0.7)
    with torch.no_grad():
        ws_t = G.mapping(torch.tensor(z), truncation_psi=0.7)
        img_t = G.synthesis(ws_t)
    assert np.abs(ws - ws_t.numpy()).max() < 1e-5
    assert np.abs(og.render(ws) - img_t.numpy()).max() < 1e-4
    assert og.generate(71).shape == (32, kw.get("img_width", 32), 3)


class DragLikeScalar(nn.Module):
    """A DragGAN-style objective: features of one block, resized, sampled at a few points."""

    def __init__(self, G, ws0, block):
        super().__init__()
        self.G, self.block = G, block
        self.w_train = nn.Parameter(ws0[:, :6].clone())
        self.register_buffer("w_fixed", ws0[:, 6:].clone())
        self.rows = torch.tensor([3.0, 10.5, 20.25])
        self.cols = torch.tensor([7.5, 12.0, 30.0])

    def forward(self, dummy):
        ws = torch.cat([self.w_train, self.w_fixed], dim=1)
        x, _ = self.G.synthesis.run_blocks(ws, 0, self.block + 1, render_rgb=False)
        feat = core.ResizedFeatures(x, (32, 32)).full()
        s = core.sample_bilinear_zeros(feat, self.rows, self.cols)
        return (s.square().sum() + dummy.sum() * 0).reshape(())


def test_ort_training_through_generator_matches_torch_gradient(tmp_path):
    from onnxruntime.training import artifacts
    from onnxruntime.training.api import CheckpointState, Module, Optimizer

    G = make(conv_clamp=256.0)
    ws0 = G.mapping(torch.randn(1, 8), truncation_psi=0.7)
    m = DragLikeScalar(G, ws0, block=3)
    dummy = torch.zeros(1)
    loss = m(dummy)
    loss.backward()
    grad_torch = m.w_train.grad.numpy().copy()

    torch.onnx.export(m, (dummy,), str(tmp_path / "f.onnx"), input_names=["dummy"], output_names=["loss"],
                      opset_version=17, dynamo=False, do_constant_folding=False,
                      export_params=True, training=torch.onnx.TrainingMode.TRAINING)
    model = onnx.load(str(tmp_path / "f.onnx"))
    frozen = [i.name for i in model.graph.initializer if i.name != "w_train"]
    out = tmp_path / "art"
    out.mkdir()
    artifacts.generate_artifacts(model, requires_grad=["w_train"], frozen_params=frozen, loss=None,
                                 optimizer=artifacts.OptimType.SGD, artifact_directory=str(out))
    state = CheckpointState.load_checkpoint(str(out / "checkpoint"))
    module = Module(str(out / "training_model.onnx"), state, str(out / "eval_model.onnx"))
    opt = Optimizer(str(out / "optimizer_model.onnx"), module)
    opt.set_learning_rate(1.0)
    module.train()
    before = state.parameters["w_train"].data.copy()
    ort_loss = module(dummy.numpy())
    opt.step()
    grad_ort = before - state.parameters["w_train"].data  # SGD with lr 1: p' = p - grad
    assert abs(float(ort_loss) - loss.item()) < 1e-4 * max(1.0, abs(loss.item()))
    rel = np.linalg.norm(grad_ort - grad_torch) / np.linalg.norm(grad_torch)
    assert rel < 1e-4, rel
    assert np.abs(grad_torch).sum() > 0
