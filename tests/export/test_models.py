"""Encoders, heads and the fusion model: shapes, masking, attention shares, size, ONNX export."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from fusion_rt.errors import ConfigError, MissingExtraError
from fusion_rt.preprocess import PreprocessConfig
from fusion_rt.rig import Rig

torch = pytest.importorskip("torch")

from fusion_rt.export.models import (  # noqa: E402  (after the importorskip on purpose)
    SCENE_LABELS,
    AttentionHeadConfig,
    FusionModel,
    FusionModelConfig,
    HeadOutput,
    create_model,
    list_models,
)
from fusion_rt.export.models.posenc import polar_encoding  # noqa: E402

pytestmark = pytest.mark.train
RIG = Rig.default()
PRE = PreprocessConfig.from_rig(RIG)
HEADS = ("attention", "concat", "gated")
M = 4


@pytest.fixture(scope="module")
def model() -> FusionModel:
    torch.manual_seed(0)
    return create_model("fusion", rig=RIG, preprocess=PRE).eval()


def _inputs(model: FusionModel, batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = model.example_inputs(batch)
    for k, v in x.items():
        if k == "text":
            x[k] = torch.randint(0, model.encoders["text"].config.vocab_size, v.shape, generator=g)
            x[k][:, 6:] = 0  # padded tail
        else:
            x[k] = torch.randn(v.shape, generator=g)
    return x


def _tokens(batch: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sizes = {"camera": 144, "radar": 128, "map": 64, "text": 1}
    return {m: torch.randn(batch, n, 64, generator=g) for m, n in sizes.items()}


def test_registry_lists_and_refuses_unknown_names():
    assert list_models("encoder") == ["camera", "map", "radar", "text"]
    assert list_models("head") == ["attention", "concat", "gated"]
    with pytest.raises(ConfigError, match="unknown model 'transformer'"):
        create_model("transformer")
    with pytest.raises(ConfigError, match=r"unknown arguments \['tokn_dim'\]"):
        create_model("camera", tokn_dim=32)
    with pytest.raises(ConfigError, match="bev_queries"):
        create_model("attention", bev_queries=(7, 8))  # 64 rows not divisible by 7
    with pytest.raises(ConfigError, match="head must be one of"):
        FusionModelConfig(head="mlp")
    with pytest.raises(ConfigError, match="depths"):
        create_model("camera", depths=(1, 1))


def test_encoder_token_shapes(model):
    x = _inputs(model)
    tokens = model.encode(x)
    expect = {"camera": 9 * 16, "radar": 16 * 8, "map": 8 * 8, "text": 1}
    for m, n in expect.items():
        assert tuple(tokens[m].shape) == (2, n, 64), m
        assert model.encoders[m].num_tokens == n
        assert torch.isfinite(tokens[m]).all()
    assert model.encoders["camera"].input_shape == (3, 144, 256)


def test_camera_tokens_carry_column_azimuth_matching_radar_code():
    cam = create_model("camera", rig=RIG, preprocess=PRE)
    radar = create_model("radar", rig=RIG, preprocess=PRE)
    az = cam.token_azimuth[:16]  # first token row, 16 columns, left to right
    half_fov = math.radians(80) / 2
    assert np.all(np.diff(az) < 0)  # positive azimuth is left: decreasing across the image
    assert half_fov * 0.85 < az[0] < half_fov and -half_fov < az[-1] < -half_fov * 0.85
    assert az[0] == pytest.approx(-az[-1])
    # The same azimuth gets the same azimuth code in both encoders (first half of the channels).
    code_cam = cam.azimuth_pos[:16, :32].numpy()
    np.testing.assert_allclose(code_cam, polar_encoding(az, None, 64)[:, :32], atol=1e-6)
    radar_code = radar.pos[:, :32].numpy()
    nearest = np.abs(radar.token_azimuth[:, None] - az[None, :]).min(axis=0)
    j = int(np.argmin(nearest))
    i = int(np.argmin(np.abs(radar.token_azimuth - az[j])))
    assert np.abs(radar_code[i] - code_cam[j]).max() < 32 * abs(radar.token_azimuth[i] - az[j]) + 1e-6


@pytest.mark.parametrize("head_name", HEADS)
def test_head_output_shapes(head_name):
    torch.manual_seed(0)
    head = create_model(head_name, rig=RIG).eval()
    out = head(_tokens(), torch.ones(2, M, dtype=torch.bool))
    assert isinstance(out, HeadOutput)
    assert tuple(out.scene_logits.shape) == (2, len(SCENE_LABELS))
    assert tuple(out.bev_logits.shape) == (2, 4, *RIG.bev.shape)
    assert tuple(out.modality_share.shape) == (2, len(SCENE_LABELS) + 1, M)


@pytest.mark.parametrize("head_name", HEADS)
@pytest.mark.parametrize("masked", [0, 1, 2, 3])
def test_masked_modality_changes_nothing(head_name, masked):
    torch.manual_seed(0)
    head = create_model(head_name, rig=RIG).eval()
    present = torch.ones(2, M, dtype=torch.bool)
    present[:, masked] = False
    name = ("camera", "radar", "map", "text")[masked]
    a = _tokens(seed=1)
    b = dict(a)
    b[name] = torch.randn_like(a[name]) * 100
    c = dict(a)
    c[name] = torch.full_like(a[name], float("nan"))  # garbage in a masked slot stays out
    with torch.no_grad():
        out_a, out_b, out_c = head(a, present), head(b, present), head(c, present.float())
    for x, y, z in zip(out_a, out_b, out_c, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)
        torch.testing.assert_close(x, z, rtol=0, atol=0)
    # ... while a present modality does change the outputs
    with torch.no_grad():
        out_d = head(b, torch.ones(2, M, dtype=torch.bool))
        out_e = head(a, torch.ones(2, M, dtype=torch.bool))
    assert not torch.equal(out_d.scene_logits, out_e.scene_logits)


@pytest.mark.parametrize("head_name", HEADS)
def test_modality_shares_sum_to_one_over_present(head_name):
    torch.manual_seed(0)
    head = create_model(head_name, rig=RIG).eval()
    present = torch.tensor([[True, True, True, True], [True, False, True, False], [False, False, False, False]])
    with torch.no_grad():
        share = head(_tokens(batch=3), present).modality_share
    assert (share >= 0).all()
    torch.testing.assert_close(share[0].sum(-1), torch.ones(6))
    torch.testing.assert_close(share[1].sum(-1), torch.ones(6))
    assert (share[1][:, [1, 3]] == 0).all()
    assert (share[2] == 0).all()  # nothing present: no shares, and no NaN
    if head_name == "attention":
        assert not torch.allclose(share[0], torch.full_like(share[0], 0.25))  # real attribution, not uniform


def test_all_modalities_masked_gives_finite_outputs():
    head = create_model("attention", rig=RIG).eval()
    with torch.no_grad():
        out = head(_tokens(), torch.zeros(2, M))
    assert all(torch.isfinite(o).all() for o in out)


def test_attention_head_is_compact():
    head = create_model("attention", rig=RIG)
    n = sum(p.numel() for p in head.parameters())
    assert n < 500_000, n


def test_text_encoder_ignores_padding_and_maps_unknown_ids():
    torch.manual_seed(0)
    enc = create_model("text", preprocess=PRE, vocab_size=20).eval()
    ids = torch.zeros(3, PRE.text_max_tokens, dtype=torch.int64)
    ids[0, :3] = torch.tensor([5, 7, 9])
    ids[1, :3] = torch.tensor([5, 7, 999])  # beyond the table: read as unknown (1)
    ids[2, :3] = torch.tensor([5, 7, 1])
    with torch.no_grad():
        out = enc(ids)
    assert tuple(out.shape) == (3, 1, 64)
    torch.testing.assert_close(out[1], out[2])
    with torch.no_grad():
        empty = enc(torch.zeros(1, PRE.text_max_tokens, dtype=torch.int64))
    assert torch.isfinite(empty).all()


def test_fusion_model_trains_and_subsets_work(model):
    # gradients reach every encoder and the head through one loss
    torch.manual_seed(0)
    m = create_model("fusion", rig=RIG, preprocess=PRE, head="gated").train()
    out = m(_inputs(m), torch.ones(2, M))
    loss = out.scene_logits.square().mean() + out.bev_logits.square().mean()
    loss.backward()
    for name in ("camera", "radar", "map", "text"):
        grads = [p.grad for p in m.encoders[name].parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), name
    # a camera-only model for the ablation
    cam_only = create_model("fusion", rig=RIG, preprocess=PRE, modalities=("camera",)).eval()
    with torch.no_grad():
        out = cam_only({"camera": torch.randn(1, 3, 144, 256)}, torch.ones(1, 1))
    assert tuple(out.modality_share.shape) == (1, 6, 1)
    with pytest.raises(ConfigError, match="missing"):
        model({"camera": torch.randn(1, 3, 144, 256)}, torch.ones(1, M))


def test_fusion_config_round_trip():
    cfg = FusionModelConfig(head="concat", token_dim=32, encoders={"camera": {"widths": [16, 32, 64]}},
                            head_config={"hidden": 64})
    again = FusionModelConfig.from_dict(cfg.to_dict())
    assert again == cfg
    with pytest.raises(ConfigError, match="encoders.camera has unknown fields"):
        FusionModelConfig(encoders={"camera": {"widht": 3}})
    m = create_model("fusion", config=cfg, rig=RIG, preprocess=PRE)
    assert m.encoders["camera"].config.widths == (16, 32, 64)
    assert tuple(m.encode(m.example_inputs(1))["radar"].shape) == (1, 128, 32)


def _export_and_run(module, args, input_names, output_names, tmp_path, name):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(module, args, str(path), dynamo=True, opset_version=18, input_names=input_names,
                      output_names=output_names, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == input_names
    flat = list(args[0]) + [args[1]] if isinstance(args[0], tuple) else list(args)
    return session.run(output_names, {n: a.numpy() for n, a in zip(input_names, flat, strict=True)})


@pytest.mark.parametrize("graph", ["camera", "radar", "map", "text", "head"])
def test_onnx_export_parity(model, graph, tmp_path):
    x = _inputs(model, batch=1)
    if graph == "head":
        with torch.no_grad():
            tokens = model.encode(x)
        args = (tuple(tokens[m] for m in model.config.modalities), torch.tensor([[True, False, True, True]]))
        names = [f"{m}_tokens" for m in model.config.modalities] + ["present"]
        outputs = list(HeadOutput._fields)
        module = model.head
    else:
        args, names, outputs, module = (x[graph],), [graph], ["tokens"], model.encoders[graph]
    got = _export_and_run(module, args, names, outputs, tmp_path, graph)
    with torch.no_grad():
        ref = module(*args)
    ref = list(ref) if isinstance(ref, tuple) else [ref]
    assert len(got) == len(ref)
    for g, r in zip(got, ref, strict=True):
        assert g.shape == tuple(r.shape)
        np.testing.assert_allclose(g, r.numpy(), atol=1e-4, rtol=0)


def test_export_package_imports_without_torch():
    script = textwrap.dedent(
        """
        import sys
        class _Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "torch":
                    raise ImportError("blocked")
        sys.meta_path.insert(0, _Block())
        import fusion_rt.export, fusion_rt.export.metrics
        from fusion_rt.errors import MissingExtraError
        try:
            fusion_rt.export.create_model
        except MissingExtraError as exc:
            assert "fusion-rt[train]" in str(exc)
            print("LAZY-OK")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LAZY-OK" in proc.stdout
    assert MissingExtraError  # the class the subprocess checks for


def test_attention_config_validates():
    with pytest.raises(ConfigError, match="dim"):
        AttentionHeadConfig(dim=66)
    with pytest.raises(ConfigError, match="modalities"):
        AttentionHeadConfig(modalities=("camera", "lidar"))


def test_gelu_is_nn_gelu_and_attention_bias_masks():
    from fusion_rt.export.models.attention import MASKED_SCORE, Gelu, attention_bias

    x = torch.linspace(-8, 8, 1001)
    torch.testing.assert_close(Gelu()(x), torch.nn.GELU()(x), rtol=1e-6, atol=1e-6)
    bias = attention_bias(torch.tensor([[True, False, True]]))
    assert bias.shape == (1, 1, 1, 3) and bias.flatten().tolist() == [0.0, MASKED_SCORE, 0.0]


def test_attention_head_without_bev_refinement():
    from fusion_rt.export.models.attention_head import AttentionHead

    head = AttentionHead(AttentionHeadConfig(bev_queries=(4, 4), num_layers=1, refine_channels=0), rig=RIG).eval()
    assert head.bev.refine is None
    with torch.no_grad():
        out = head(_tokens(), torch.ones(2, M, dtype=torch.bool))
    assert out.bev_logits.shape[-2:] == RIG.bev.shape and torch.isfinite(out.bev_logits).all()
    with pytest.raises(ConfigError, match="refine_channels"):
        AttentionHeadConfig(refine_channels=-1)
