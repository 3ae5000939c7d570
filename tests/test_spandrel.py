"""register_spandrel (esc_arch/spandrel_support.py): spandrel detects every preset from its
tensors and runs it like the paper's protocol."""

import pytest
import torch

import esc_arch
from esc_arch import PRESETS, build_preset

spandrel = pytest.importorskip("spandrel")


def test_register_spandrel_is_idempotent():
    esc_arch.register_spandrel()
    count = len(spandrel.MAIN_REGISTRY.architectures())
    esc_arch.register_spandrel()
    assert len(spandrel.MAIN_REGISTRY.architectures()) == count
    assert [s.architecture.id for s in spandrel.MAIN_REGISTRY.architectures()].count("ESC") == 1


@pytest.mark.parametrize(("name", "scale"), [(n, s) for n, p in PRESETS.items() for s in p.scales])
def test_spandrel_detects_every_preset(name, scale, tmp_path):
    esc_arch.register_spandrel()
    path = tmp_path / "w.pth"
    torch.save({"params_ema": build_preset(name, scale).state_dict()}, path)
    model = spandrel.ModelLoader().load_from_file(str(path))
    assert model.architecture.id == "ESC" and model.scale == scale and model.tags[0] == name
    assert model.size_requirements.multiple_of == PRESETS[name].config.window_size
    assert model.supports_bfloat16 and model.input_channels == model.output_channels == 3


def test_spandrel_output_matches_golden(golden, data_dir):
    esc_arch.register_spandrel()
    model = spandrel.ModelLoader().load_from_file(str(data_dir / "esc_fp_x3_eval.pth"))
    _, x, expected, _ = golden("esc_fp_x3_eval")
    model.model.eval()
    with torch.no_grad():
        # spandrel pads to the window like the paper's protocol and clamps to [0, 1]; compare with ours
        from esc_arch.runtime.inference import upscale

        assert (model(x) - upscale(model.model, x).clamp(0, 1)).abs().max().item() < 1e-4
        assert (model.model(x) - expected).abs().max().item() < 1e-4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda sd: sd["to_img.bias"].view(-1)[1].fill_(float("nan")),
         r"the state dict: 'to_img\.bias' holds 1 non-finite value\(s\) \(NaN or Inf\); these weights are broken"),
        (lambda sd: sd["proj.weight"].view(-1)[0].fill_(float("inf")),
         r"the state dict: 'proj\.weight' holds 1 non-finite value\(s\) \(NaN or Inf\)"),
        (lambda sd: sd.update({"blocks.0.attn.to_qkv.weight": torch.zeros(5, 16, 1, 1)}),
         r"the state dict: 'blocks\.0\.attn\.to_qkv\.weight' has shape \(5, 16, 1, 1\); expected \(48, 16, 1, 1\)$"),
        (lambda sd: sd.pop("blocks.0.attn.to_qkv.bias", None) if "blocks.0.attn.to_qkv.bias" in sd
         else sd.pop("blocks.0.convffns.0.proj.bias"), r"the state dict: '\S+' is missing$"),
    ],
    ids=["nan", "inf", "wrong shape", "missing key"],
)  # fmt: skip
def test_spandrel_refuses_what_load_model_refuses(tiny_config, change, message):
    """ComfyUI and chaiNNer load through spandrel: a broken file is refused there with the line
    ``esc upscale`` gives, not turned into a black image."""
    esc_arch.register_spandrel()
    sd = {k: v.clone() for k, v in esc_arch.ESC(**tiny_config, upscaling_factor=2).state_dict().items()}
    change(sd)
    with pytest.raises(ValueError, match=message):
        spandrel.ModelLoader().load_from_state_dict(sd)


# --------------------------------------------------------------------------- spandrel's conventions

TINY = dict(dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2, exp_ratio=1.25)
#: What a file cannot hold, by family: (keyword, the value a loaded network has, why). These are
#: left out of the comparison of hyperparameters; every other keyword must come back equal.
NOT_IN_THE_FILE = {
    "ESCRIB window": ("window_size", 64, "RIB's coordinates are not saved: the released 64 is assumed"),
    "ESCRIB nn+conv x3": ("upscaling_factor", 2, "one nn+conv stage at x2 and x3 has the same tensors"),
    "ESCRIB pixelshuffle_direct": ("intermediate_dim", 64, "pixelshuffle_direct has no intermediate layer"),
    "ESCRealM x1": ("upsampler", "conv", "at x1 without unshuffling every upsampler is the same one convolution"),
    "attn_type": ("attn_type", "auto", "a backend, chosen when running, not a weight"),
    "deployment": ("deployment", False, "the authors' flag; no tensor differs"),
}


def _grid() -> list[tuple[str, dict]]:
    """Constructor calls of every fixed-scale family: upsamplers, scales 1-8, layer norm,
    FlashBias ranks, ESC-RIB's gates and upsamplers. A call a family refuses (its
    configuration's rule, e.g. ESC-Real's nearest tail at x2) is not in the grid."""
    from esc_arch.archs.esc_real_arch import UPSAMPLERS
    from esc_arch.archs.esc_rib_arch import RIB_GATES, RIB_UPSAMPLERS

    calls = [("ESC", dict(upscaling_factor=s)) for s in range(1, 9)]
    calls += [
        ("ESC", dict(upscaling_factor=2, use_ln=True)),
        ("ESC", dict(upscaling_factor=3, flashbias_rank=4)),
        ("ESC", dict(upscaling_factor=4, flashbias_rank=12, use_ln=True)),
    ]
    calls += [("ESCFP", dict(upscaling_factor=s)) for s in range(1, 9)]
    calls += [("ESCReal", dict(upscaling_factor=4))]
    calls += [("ESCReal", dict(upscaling_factor=s, use_dysample=True)) for s in range(1, 9)]
    calls += [("ESCReal", dict(upscaling_factor=s, neosr_tail=True)) for s in (1, 2, 4, 8)]
    calls += [
        ("ESCRealM", dict(upscaling_factor=s, upsampler=u, mid_dim=16, unshuffle_mod=m))
        for u in UPSAMPLERS
        for s in range(1, 9)
        for m in (True, False)
    ]
    calls += [
        (
            "ESCRIB",
            dict(
                upscaling_factor=s,
                window_size=64,
                rank=4,
                rib_hidden_dim=8,
                rib_n_freqs=2,
                gate_type=g,
                upsampler_type=u,
                intermediate_dim=8,
            ),
        )
        for g in RIB_GATES
        for u in RIB_UPSAMPLERS
        for s in range(1, 9)
    ]
    from esc_arch import NETWORKS

    accepted = []
    for family, keywords in calls:
        try:
            NETWORKS[family].Config(**{**TINY, **keywords})
        except ValueError:
            continue
        accepted.append((family, keywords))
    return accepted  # fmt: skip


GRID = _grid()


def _expected(net) -> dict:
    """The hyperparameters a loaded copy of ``net`` has: its own, less what a file cannot hold."""
    expected = dict(net.hyperparameters)
    changes = ["attn_type", "deployment"]
    if type(net).__name__ == "ESCRIB":
        changes.append("ESCRIB window")
        changes += ["ESCRIB pixelshuffle_direct"] if net.config.upsampler_type == "pixelshuffle_direct" else []
        three = net.config.upsampler_type == "nn+conv" and net.config.upscaling_factor == 3
        changes += ["ESCRIB nn+conv x3"] if three else []
    if type(net).__name__ == "ESCRealM" and net.config.upsampler_scale == net.config.upscaling_factor > 2:
        expected["unshuffle_mod"] = True  # no unshuffling above x2, whatever the flag says
    if type(net).__name__ == "ESCRealM" and (net.config.upsampler == "conv" or net.config.upsampler_scale == 1):
        expected["unshuffle_mod"] = False  # one convolution: nothing to unshuffle
        changes.append("ESCRealM x1")
    for name in changes:
        key, value, _ = NOT_IN_THE_FILE[name]
        expected[key] = value
    return expected


def test_the_grid_covers_every_family_and_upsampler():
    from esc_arch.archs.esc_real_arch import UPSAMPLERS
    from esc_arch.archs.esc_rib_arch import RIB_UPSAMPLERS

    assert {f for f, _ in GRID} == {"ESC", "ESCFP", "ESCReal", "ESCRealM", "ESCRIB"}
    assert {k["upsampler"] for f, k in GRID if f == "ESCRealM"} == set(UPSAMPLERS)
    assert {k["upsampler_type"] for f, k in GRID if f == "ESCRIB"} == set(RIB_UPSAMPLERS)
    assert {k["upscaling_factor"] for _, k in GRID} == set(range(1, 9))
    assert len(GRID) > 150


@pytest.mark.slow  # 16 s each: about 200 networks built and loaded
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_hyperparameters_round_trip_through_files(fmt, tmp_path):
    """Each constructor call of the grid: ``type(net)(**net.hyperparameters)`` rebuilds it, and
    spandrel loads its file with the same hyperparameters (less :data:`NOT_IN_THE_FILE`)."""
    from safetensors.torch import save_file

    from esc_arch import NETWORKS

    esc_arch.register_spandrel()
    failures = []
    for family, keywords in GRID:
        net = NETWORKS[family](**{**TINY, **keywords})
        assert type(net)(**net.hyperparameters).config == net.config
        path = tmp_path / f"w.{fmt}"
        sd = {k: v.contiguous() for k, v in net.state_dict().items()}
        torch.save({"params_ema": sd}, path) if fmt == "pth" else save_file(sd, path)
        loaded = spandrel.ModelLoader().load_from_file(str(path))
        expected = _expected(net)
        if loaded.model.hyperparameters != expected or loaded.scale != expected["upscaling_factor"]:
            failures.append((family, keywords, loaded.model.hyperparameters))
    assert not failures, failures[:3]


@pytest.mark.parametrize(
    ("family", "keywords"),
    [(f, k) for f, k in GRID if k.get("gate_type", "DWC") == "DWC" and k.get("unshuffle_mod", True)
     and k["upscaling_factor"] in (1, 3, 4)],
    ids=lambda v: v if isinstance(v, str) else "-".join(f"{a}={b}" for a, b in v.items() if a in
                                                          ("upscaling_factor", "upsampler", "upsampler_type",
                                                           "use_dysample", "neosr_tail", "flashbias_rank", "use_ln")),
)  # fmt: skip
def test_every_size_the_descriptor_accepts_gives_scale_times_the_input(family, keywords):
    """spandrel pads an input to the declared multiple (the paper's protocol) and crops the
    output: any size gives ``scale`` times itself, sizes that are multiples of it included; the
    network, which the description says pads itself, does the same without spandrel."""
    from esc_arch import NETWORKS

    esc_arch.register_spandrel()
    net = NETWORKS[family](**{**TINY, **keywords})
    descriptor = spandrel.ModelLoader().load_from_state_dict(net.state_dict())
    multiple = descriptor.size_requirements.multiple_of
    assert multiple == net.size_multiple  # the window, times the unshuffle factor of ESCRealM at x1 and x2
    scale = descriptor.scale
    assert scale == _expected(net)["upscaling_factor"]  # ESC-RIB's nn+conv x3 reads as x2
    described = esc_arch.describe(net)  # the network itself takes any size (without spandrel's padding)
    assert described.pads_itself
    for height, width in [(1, 1), (5, 7), (multiple, multiple), (multiple + 3, 2 * multiple)]:
        with torch.no_grad():
            out, own = descriptor(torch.rand(1, 3, height, width)), net.eval()(torch.rand(1, 3, height, width))
        assert out.shape == (1, 3, height * scale, width * scale), (height, width)
        assert own.shape == (1, 3, height * described.scale, width * described.scale), (height, width)
