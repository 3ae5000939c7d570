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
        from esc_arch.inference import upscale

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
