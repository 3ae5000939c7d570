"""ESCModel's pieces on their own (esc_arch/basicsr_plugin/models/esc_model.py): optimizers by
name, rebuilding from the same options, loading with the scale transfer."""

import pytest
import torch

from esc_arch import ESC
from esc_arch.basicsr_plugin.models import ESCModel


def test_optimizers_by_name():
    model = ESCModel.__new__(ESCModel)
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert isinstance(model.get_optimizer("AdamW", params, 5e-4, betas=(0.9, 0.9)), torch.optim.AdamW)
    with pytest.raises(ValueError, match="'Adamw' is not a torch.optim optimizer; accepted: .*'AdamW'"):
        model.get_optimizer("Adamw", params, 1e-3)


def test_setup_optimizers_leaves_the_options_intact():
    """BasicSR pops 'type' from the optimiser options it is given; ours must survive a rebuild."""
    model = ESCModel.__new__(ESCModel)
    model.net_g, model.optimizers = torch.nn.Linear(2, 2), []
    optim_g = {"type": "AdamW", "lr": 1e-3, "betas": [0.9, 0.9]}
    model.opt = {"train": {"optim_g": dict(optim_g), "optim_d": {"type": "Adam", "lr": 1e-4}}}
    model.setup_optimizers()
    model.setup_optimizers()  # again, from the same options
    assert model.opt["train"]["optim_g"] == optim_g and model.opt["train"]["optim_d"] == {"type": "Adam", "lr": 1e-4}
    assert [type(o) for o in model.optimizers] == [torch.optim.AdamW, torch.optim.AdamW]


@pytest.mark.parametrize("strict", [True, False])
def test_scale_transfer_through_basicsr_load_network(golden, data_dir, strict):
    _, x, expected, case = golden("esc_x4_from_x2_eval")
    net = ESC(**case["config"], attn_type="sdpa").eval()
    model = ESCModel.__new__(ESCModel)  # load_network only needs the bare-model helper
    model.opt, model.is_train = {"dist": False}, True
    model.load_network(net, str(data_dir / "esc_x2_eval.pth"), strict=strict, param_key="params_ema")
    with torch.no_grad():
        assert (net(x) - expected).abs().max().item() < 1e-4
    model.is_train = False  # basicsr test: a transfer is refused, naming the file
    with pytest.raises(ValueError, match="esc_x2_eval.pth.*x2 network and this network is x4"):
        model.load_network(net, str(data_dir / "esc_x2_eval.pth"), strict=strict, param_key="params_ema")
