"""ESCModel's pieces on their own (esc_arch/basicsr_plugin/models/esc_model.py): optimizers by
name, rebuilding from the same options, loading (the scale transfer, ``strict_load_g: false``, the
discriminator)."""

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


def _model(**networks) -> ESCModel:
    model = ESCModel.__new__(ESCModel)  # load_network only needs the bare-model helper and the options
    model.opt, model.is_train = {"dist": False}, True
    for name, net in networks.items():
        setattr(model, name, net)
    return model


def test_non_strict_loading_leaves_out_what_does_not_fit(tiny_net, tmp_path):
    """``strict_load_g: false``: BasicSR's semantics through the shared load path (a tensor of
    another shape left out and said, a missing one keeps the network's own, the rest loaded)."""
    import logging

    source, net = tiny_net(seed=1), tiny_net(seed=2)
    own = {k: v.clone() for k, v in net.state_dict().items()}
    sd = {k: v.clone() for k, v in source.state_dict().items()}
    sd["last.weight"] = torch.zeros(1, 1, 1, 1)
    del sd["last.bias"]
    torch.save({"params": sd}, tmp_path / "partial.pth")
    said = []
    handler = logging.Handler()
    handler.emit = lambda record: said.append(record.getMessage())
    logging.getLogger("basicsr.esc").addHandler(handler)
    try:
        _model(net_g=net).load_network(net, str(tmp_path / "partial.pth"), strict=False)
    finally:
        logging.getLogger("basicsr.esc").removeHandler(handler)
    loaded = net.state_dict()
    assert torch.equal(loaded["last.weight"], own["last.weight"]) and torch.equal(loaded["last.bias"], own["last.bias"])
    assert all(torch.equal(loaded[k], v) for k, v in sd.items() if k != "last.weight")
    assert any("'last.weight' has shape (1, 1, 1, 1)" in line and "left out" in line for line in said), said


def test_the_discriminator_loads_by_the_same_path(tmp_path):
    """``pretrain_network_d`` (and its resume) goes through ``ESCModel.load_network`` as
    network_g does, in every model that trains one: the same lines, the hint naming network_d."""
    from esc_arch.archs.discriminator_arch import DeepUNetDiscriminatorSN
    from esc_arch.basicsr_plugin.models import ESCLTEModel, ESCRealESRGANModel, ESCRealESRNetModel

    assert ESCRealESRGANModel.load_network is ESCRealESRNetModel.load_network is ESCLTEModel.load_network
    assert ESCRealESRGANModel.load_network is ESCModel.load_network
    net_d = DeepUNetDiscriminatorSN(num_feat=8, attn_type="naive")
    model = _model(net_g=torch.nn.Identity(), net_d=net_d)
    sd = {k: v.clone() for k, v in DeepUNetDiscriminatorSN(num_feat=8, attn_type="naive").state_dict().items()}
    path = str(tmp_path / "net_d.pth")
    torch.save({"params": sd}, path)
    model.load_network(net_d, path)
    assert all(torch.equal(net_d.state_dict()[k], v) for k, v in sd.items())

    sd["conv0.weight"] = torch.zeros(8, 3, 1, 1)
    torch.save({"params": sd}, path)
    with pytest.raises(ValueError) as refused:
        model.load_network(net_d, path)
    assert str(refused.value) == (
        f"{path}: 'conv0.weight' has shape (8, 3, 1, 1); expected (8, 3, 3, 3); the file does not fit network_d "
        "(DeepUNetDiscriminatorSN): network_d must be the configuration it was trained with (to start from part of "
        "a network, set path: strict_load_d: false)"
    )
    model.load_network(net_d, path, strict=False)  # strict_load_d: false: that tensor left out

    sd["conv0.bias"].view(-1)[0] = float("nan")
    torch.save({"params": sd}, path)
    with pytest.raises(ValueError) as refused:
        model.load_network(net_d, path, strict=False)
    assert str(refused.value).startswith(f"{path}: 'conv0.bias' holds 1 non-finite value(s) (NaN or Inf);")
