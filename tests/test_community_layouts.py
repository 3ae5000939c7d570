"""Files written by the community trainers load: traiNNer-redux's ESCRealM with its own
upsamplers (``transpose+conv``, its default, ``lda``, ``pa_up``: MetaUpsample record version 3,
indices 5, 6, 7) at every scale it offers, x1 included, saved as it saves them (a bare state dict,
safetensors by default, or .pth); neosr's ``esc`` with ``realsr: true, use_dysample: false``
(two convolutions per x2 stage), saved as ``{'params': ...}``.

The files are built from the key/shape layouts recorded below (read off the trainers' code).
The expected outputs come from a re-implementation of each tail written here, functionally,
from the state dict alone, applied to the features the network hands its tail (a forward hook);
the lda one samples each of its nine points separately instead of in one grid."""

import math

import pytest
import torch
import torch.nn.functional as F

from esc_arch import NETWORKS, infer_config, load_model

BODY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=4, num_heads=2)


def perturb(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.1)
    return net


# --------------------------------------------------------------------------- the recorded layouts


def tail_layout(upsampler: str, scale: int, dim: int, mid: int) -> dict[str, tuple[int, ...]]:
    """``to_img.*`` keys and shapes of traiNNer-redux's UniUpsampleV3 (scale: the upsampler's)."""
    if scale == 1:
        return {"0.weight": (3, dim, 3, 3), "0.bias": (3,)}
    if upsampler == "transpose+conv":  # a transposed convolution's weight is (in, out, k, k)
        if scale == 4:
            shapes = {"0.weight": (dim, dim, 4, 4), "0.bias": (dim,), "2.weight": (dim, 3, 4, 4), "2.bias": (3,)}
            return {**shapes, "3.weight": (3, 3, 3, 3), "3.bias": (3,)}
        k = 4 if scale == 2 else 3
        return {"0.weight": (dim, 3, k, k), "0.bias": (3,), "1.weight": (3, 3, 3, 3), "1.bias": (3,)}
    if upsampler == "pa_up":
        shapes, index, channels = {}, 0, dim
        for _ in range(1 if scale == 3 else int(math.log2(scale))):
            shapes.update({f"{index + 1}.weight": (mid, channels, 3, 3), f"{index + 1}.bias": (mid,)})
            shapes.update({f"{index + 2}.conv.0.weight": (mid, mid, 1, 1), f"{index + 2}.conv.0.bias": (mid,)})
            shapes.update({f"{index + 4}.weight": (mid, mid, 3, 3), f"{index + 4}.bias": (mid,)})
            index, channels = index + 6, mid
        return {**shapes, f"{index}.weight": (3, mid, 3, 3), f"{index}.bias": (3,)}
    hidden, group = mid // 4, mid // 8  # lda: a 3x3 projection to mid, LDA_AQU, a conv to RGB
    shapes = {"0.weight": (mid, dim, 3, 3), "0.bias": (mid,), "3.weight": (3, mid, 3, 3), "3.bias": (3,)}
    shapes.update({"2.proj_q.weight": (hidden, mid, 1, 1), "2.proj_k.weight": (hidden, mid, 1, 1)})
    shapes.update({"2.conv_offset.0.weight": (group, 1, 3, 3), "2.conv_offset.1.weight": (group,)})
    shapes.update({"2.conv_offset.1.bias": (group,), "2.conv_offset.3.weight": (18, group, 3, 3)})
    shapes.update({"2.conv_offset.3.bias": (18,), "2.layer_norm.weight": (mid,), "2.layer_norm.bias": (mid,)})
    return {**shapes, "2.relative_position_bias_table": (1, 1, 1, 9, hidden)}


# --------------------------------------------------------------------------- the tails, written out


def layer_norm(x, weight, bias):
    mean = x.mean(1, keepdim=True)
    var = (x - mean).square().mean(1, keepdim=True)
    return (x - mean) / torch.sqrt(var + 1e-6) * weight[:, None, None] + bias[:, None, None]


def reference_lda(sd: dict, x: torch.Tensor, scale: int) -> torch.Tensor:
    """One head, two groups, 3x3 points: softmax over the points of q . (k(p) + table) / sqrt(d)."""
    b, c, h, w = x.shape
    oh, ow = h * scale, w * scale
    normed = layer_norm(x, sd["layer_norm.weight"], sd["layer_norm.bias"])
    q = F.interpolate(F.conv2d(normed, sd["proj_q.weight"]), size=(oh, ow), mode="bilinear", align_corners=True)
    k = F.conv2d(normed, sd["proj_k.weight"])
    hidden = q.shape[1]
    logits, values = [], []
    for group in range(2):
        qg = q[:, group * hidden // 2 : (group + 1) * hidden // 2]
        o = F.conv2d(qg, sd["conv_offset.0.weight"], padding=1, groups=qg.shape[1])
        o = F.silu(layer_norm(o, sd["conv_offset.1.weight"], sd["conv_offset.1.bias"]))
        o = torch.tanh(F.conv2d(o, sd["conv_offset.3.weight"], sd["conv_offset.3.bias"], padding=1)) * 11
        rows = torch.arange(oh, dtype=x.dtype).view(1, oh, 1)
        cols = torch.arange(ow, dtype=x.dtype).view(1, 1, ow)
        point_k, point_v = [], []
        for i in range(3):
            for j in range(3):
                n = 3 * i + j
                y = o[:, 2 * n] + (i - 1) + rows
                xx = o[:, 2 * n + 1] + (j - 1) + cols
                grid = torch.stack([2 * xx / (ow - 1) - 1, 2 * y / (oh - 1) - 1], dim=-1)
                kg = k[:, group * hidden // 2 : (group + 1) * hidden // 2]
                vg = x[:, group * c // 2 : (group + 1) * c // 2]
                point_k.append(F.grid_sample(kg, grid, mode="bilinear", padding_mode="zeros", align_corners=True))
                point_v.append(F.grid_sample(vg, grid, mode="bilinear", padding_mode="zeros", align_corners=True))
        logits.append(torch.stack(point_k, 1))  # (b, 9, hidden/2, oh, ow)
        values.append(torch.stack(point_v, 1))  # (b, 9, c/2, oh, ow)
    keys = torch.cat(logits, 2) + sd["relative_position_bias_table"][0, 0, 0].view(1, 9, hidden, 1, 1)
    weights = ((q.unsqueeze(1) * keys).sum(2) / math.sqrt(hidden)).softmax(1)  # (b, 9, oh, ow)
    return (weights.unsqueeze(2) * torch.cat(values, 2)).sum(1)


def reference_tail(upsampler: str, scale: int, sd: dict, feat: torch.Tensor) -> torch.Tensor:
    sd = {k.removeprefix("to_img."): v for k, v in sd.items() if k.startswith("to_img.")}
    conv = lambda t, name, **kw: F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1, **kw)  # noqa: E731
    if scale == 1:
        return conv(feat, "0")
    if upsampler == "transpose+conv":
        if scale == 4:
            t = F.gelu(F.conv_transpose2d(feat, sd["0.weight"], sd["0.bias"], stride=2, padding=1))
            return conv(F.conv_transpose2d(t, sd["2.weight"], sd["2.bias"], stride=2, padding=1), "3")
        stride, padding = (2, 1) if scale == 2 else (3, 0)
        return conv(F.conv_transpose2d(feat, sd["0.weight"], sd["0.bias"], stride=stride, padding=padding), "1")
    if upsampler == "pa_up":
        t, index = feat, 0
        for _ in range(1 if scale == 3 else int(math.log2(scale))):
            t = conv(F.interpolate(t, scale_factor=2 if scale != 3 else 3, mode="nearest"), f"{index + 1}")
            t = t * torch.sigmoid(F.conv2d(t, sd[f"{index + 2}.conv.0.weight"], sd[f"{index + 2}.conv.0.bias"]))
            t = F.leaky_relu(conv(F.leaky_relu(t, 0.2), f"{index + 4}"), 0.2)
            index += 6
        return conv(t, f"{index}")
    t = F.leaky_relu(conv(feat, "0"), 0.01)
    lda = {k.removeprefix("2."): v for k, v in sd.items() if k.startswith("2.")}
    return conv(reference_lda(lda, t, scale), "3")


def reference_neosr_tail(sd: dict, feat: torch.Tensor) -> torch.Tensor:
    indices = sorted(int(k.split(".")[1]) for k in sd if k.startswith("to_img.") and k.endswith(".weight"))
    t = feat
    for stage in range(indices[-1] // 5):
        t = F.interpolate(t, scale_factor=2, mode="nearest")
        for index in (5 * stage + 1, 5 * stage + 3):
            t = F.leaky_relu(F.conv2d(t, sd[f"to_img.{index}.weight"], sd[f"to_img.{index}.bias"], padding=1), 0.2)
    return F.conv2d(t, sd[f"to_img.{indices[-1]}.weight"], sd[f"to_img.{indices[-1]}.bias"], padding=1)


def tail_input(net, x):
    captured = {}
    handle = net.to_img.register_forward_hook(lambda m, args, out: captured.update(feat=args[0]))
    with torch.no_grad():
        out = net(x)
    handle.remove()
    return out, captured["feat"]


# --------------------------------------------------------------------------- traiNNer-redux

TRAINNER = [(u, s) for u in ("transpose+conv", "lda", "pa_up") for s in (1, 2, 3, 4)]


@pytest.mark.parametrize(("upsampler", "scale"), TRAINNER)
def test_trainner_escrealm_layout_output_and_scale(upsampler, scale, tmp_path):
    from safetensors.torch import save_file

    mid = 24
    net = perturb(NETWORKS["ESCRealM"](**BODY, upscaling_factor=scale, upsampler=upsampler, mid_dim=mid)).eval()
    sd = net.state_dict()
    inner = 4 if scale < 3 else scale  # the body of x1 and x2 runs on PixelUnshuffle(4 / scale)
    expected_layout = tail_layout(upsampler, inner, 16, mid)
    layout = {k.removeprefix("to_img."): tuple(v.shape) for k, v in sd.items() if k.startswith("to_img.")}
    assert layout == {**expected_layout, "MetaUpsample": (7,)}
    meta = sd["to_img.MetaUpsample"].tolist()
    assert meta[:3] == [3, {"transpose+conv": 5, "lda": 6, "pa_up": 7}[upsampler], inner]

    save_file(sd, tmp_path / "net.safetensors")  # traiNNer-redux's default
    torch.save(sd, tmp_path / "net.pth")  # its .pth: a bare state dict
    x = torch.rand(1, 3, 9, 7)
    for name in ("net.safetensors", "net.pth"):
        loaded = load_model(tmp_path / name, attn_type="naive")
        assert loaded.scale == scale and loaded.config.upsampler == upsampler
        out, feat = tail_input(loaded, x)
        assert out.shape == (1, 3, 9 * scale, 7 * scale)  # the true output scale
        expected = reference_tail(upsampler, inner, sd, feat)[..., : 9 * scale, : 7 * scale]
        assert (out - expected).abs().max().item() < 1e-5


def test_trainner_x1_without_unshuffle_loads_whatever_upsampler_it_records(tmp_path):
    """At x1 without unshuffling every UniUpsampleV3 is one convolution; the record keeps the
    upsampler asked for (transpose+conv, the default)."""
    net = perturb(NETWORKS["ESCRealM"](**BODY, upscaling_factor=1, upsampler="conv", unshuffle_mod=False)).eval()
    sd = dict(net.state_dict())
    sd["to_img.MetaUpsample"] = torch.tensor([3, 5, 1, 16, 3, 64, 4], dtype=torch.uint8)
    torch.save(sd, tmp_path / "x1.pth")
    loaded = load_model(tmp_path / "x1.pth")
    x = torch.rand(1, 3, 9, 7)
    out, feat = tail_input(loaded, x)
    assert loaded.scale == 1 and out.shape == x.shape
    assert (out - reference_tail("conv", 1, sd, feat)).abs().max().item() < 1e-6


def test_a_conv_upsampler_after_unshuffling_is_refused_with_its_true_scale(tmp_path):
    net = NETWORKS["ESCRealM"](**BODY, upscaling_factor=2, upsampler="pixelshuffledirect")
    sd = dict(net.state_dict())
    sd["to_img.0.weight"], sd["to_img.0.bias"] = torch.zeros(3, 16, 3, 3), torch.zeros(3)
    sd["to_img.MetaUpsample"] = torch.tensor([3, 0, 4, 16, 3, 64, 4], dtype=torch.uint8)
    torch.save(sd, tmp_path / "c.pth")
    with pytest.raises(ValueError, match=r"c\.pth: .*one convolution after PixelUnshuffle\(2\): .* 1/2 of its input"):
        load_model(tmp_path / "c.pth")
    with pytest.raises(ValueError, match="upsampler 'conv' does not upsample"):
        NETWORKS["ESCRealM"](**BODY, upscaling_factor=4, upsampler="conv")


def test_trainner_files_through_upscale_and_spandrel(esc_cli, image_dir, tmp_path):
    from safetensors.torch import save_file

    import esc_arch

    spandrel = pytest.importorskip("spandrel")
    net = perturb(NETWORKS["ESCRealM"](**BODY, upscaling_factor=2, upsampler="transpose+conv")).eval()
    save_file(net.state_dict(), tmp_path / "escrealm.safetensors")
    esc_arch.register_spandrel()
    model = spandrel.ModelLoader().load_from_file(str(tmp_path / "escrealm.safetensors"))
    assert model.scale == 2 and model.architecture.id == "ESC"
    x = torch.rand(1, 3, 12, 8)
    with torch.no_grad():
        assert (model.model.eval()(x) - net(x)).abs().max().item() < 1e-6
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "b.png").write_bytes((image_dir / "val/bird.png").read_bytes())
    result = esc_cli("upscale", "-i", tmp_path / "in", "-o", tmp_path / "out", "-m", tmp_path / "escrealm.safetensors")
    assert result.returncode == 0, result.stderr
    assert "x2" in result.stderr


# --------------------------------------------------------------------------- neosr


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_neosr_two_convolution_tail(scale, tmp_path):
    net = perturb(NETWORKS["ESCReal"](**BODY, upscaling_factor=scale, neosr_tail=True)).eval()
    sd = net.state_dict()
    stages = int(math.log2(scale))
    tail = sorted(int(k.split(".")[1]) for k in sd if k.startswith("to_img.") and k.endswith(".weight"))
    assert tail == [i for t in range(stages) for i in (5 * t + 1, 5 * t + 3)] + [5 * stages]
    torch.save({"params": sd}, tmp_path / "neosr.pth")  # neosr's layout
    loaded = load_model(tmp_path / "neosr.pth", attn_type="naive")
    assert loaded.scale == scale and loaded.config.neosr_tail
    x = torch.rand(1, 3, 10, 6)
    out, feat = tail_input(loaded, x)
    assert out.shape == (1, 3, 10 * scale, 6 * scale)
    assert (out - reference_neosr_tail(sd, feat)).abs().max().item() < 1e-5
    assert infer_config(sd) == net.config


def test_neosr_tail_rules():
    with pytest.raises(ValueError, match="neosr_tail is a nearest-upsampling tail of a power-of-two scale; got x3"):
        NETWORKS["ESCReal"](**BODY, upscaling_factor=3, neosr_tail=True)
    with pytest.raises(ValueError, match="upscaling_factor must be 4 for ESCReal"):
        NETWORKS["ESCReal"](**BODY, upscaling_factor=2)
