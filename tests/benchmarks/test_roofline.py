"""benchmarks/roofline.py: the operator recorder counts each operator's FLOPs, bytes and
exponentials as its formulas say (convolutions as torch.utils.flop_counter does, the fused CPU
attention by the matrix-product formula), the bounds follow from the rates, and the table adds up.
Timings are not checked."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import esc_arch

#: Round rates, so bounds can be worked out by hand: GFLOP/s, GFLOP/s, GB/s, exponentials/s.
RATES = {"fp32": 100.0, "bf16": 400.0, "bandwidth": 10.0, "exp": 1e9}
ATTENTION = "aten._scaled_dot_product_flash_attention_for_cpu.default"


@pytest.fixture(scope="module")
def roofline(benchmark_module):
    with benchmark_module("roofline") as module:
        yield module


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = esc_arch.ESC(dim=16, pdim=8, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2, upscaling_factor=2)
    return net.eval(), torch.rand(1, 3, 16, 16)


def recorded(roofline, fn):
    recorder = roofline.OpRecorder()
    with torch.no_grad(), recorder:
        fn()
    return recorder.records


@pytest.fixture(scope="module")
def tiny_records(roofline, tiny):
    net, x = tiny
    return recorded(roofline, lambda: net(x))


def test_attention_flops_and_exps_follow_the_formula(roofline, tiny_records):
    attention = [r for r in tiny_records if r.name == ATTENTION]
    assert len(attention) == 1 and attention[0].op_class == "attention"
    (batch, heads, length, channels), (_, _, source, _), (*_, value_channels) = attention[0].shapes[:3]
    assert attention[0].flops == 2 * batch * heads * length * source * (channels + value_channels) > 0
    assert attention[0].exps == batch * heads * length * source


def test_attention_kernel_and_math_path_count_the_same(roofline):
    """Different query and key lengths: torch's fused CPU kernel (value channels = query
    channels) and, with other value channels, the math path (bmm, softmax, bmm)."""
    q, k = torch.rand(2, 3, 5, 4), torch.rand(2, 3, 7, 4)
    for v, fused in ((torch.rand(2, 3, 7, 4), True), (torch.rand(2, 3, 7, 6), False)):
        records = recorded(roofline, lambda v=v: F.scaled_dot_product_attention(q, k, v))
        assert any(r.name == ATTENTION for r in records) == fused
        assert sum(r.flops for r in records) == 2 * 2 * 3 * 5 * 7 * 4 + 2 * 2 * 3 * 5 * 7 * v.shape[-1]
        assert sum(r.exps for r in records) == 2 * 3 * 5 * 7
        if fused:  # q, k, v; the output and the logsumexp
            (attention,) = [r for r in records if r.name == ATTENTION]
            assert attention.bytes == 4 * (q.numel() + k.numel() + v.numel() + 2 * 3 * 5 * 4 + 2 * 3 * 5)
        else:
            assert "other" not in {r.op_class for r in records}


def test_convolution_flops_equal_flop_counter(roofline, tiny, tiny_records):
    """flop_counter does not count the fused CPU attention kernel: its total is the rest."""
    net, x = tiny
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(x)
    counted = counter.get_flop_counts()["Global"]
    attention = sum(n for op, n in counted.items() if "attention" in str(op))
    convolution = sum(r.flops for r in tiny_records if r.op_class == "convolution")
    assert convolution == counter.get_total_flops() - attention > 0
    assert sum(r.flops for r in tiny_records if r.op_class != "attention") == convolution


def test_every_operator_of_the_network_has_a_class(roofline, tiny_records):
    classes = {r.op_class for r in tiny_records}
    assert {"convolution", "attention", "elementwise", "normalisation", "copy", "view"} <= classes
    assert "other" not in classes, [r.name for r in tiny_records if r.op_class == "other"]
    assert all(r.dtype == torch.float32 for r in tiny_records if r.op_class == "convolution")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bytes_of_known_operators(roofline, dtype):
    size = torch.tensor([], dtype=dtype).element_size()
    a, b, row = torch.rand(3, 4).to(dtype), torch.rand(3, 4).to(dtype), torch.rand(4).to(dtype)
    out = torch.empty(3, 4, dtype=dtype)

    def ops():
        a + b  # two inputs, one output
        a + row  # the row is read once
        a + row.expand(3, 4)  # a broadcast dimension (stride 0) counts once
        torch.add(a, b, out=out)  # out= is written, not read
        out.copy_(a)  # the target is written, not read
        a.view(4, 3).permute(1, 0).transpose(0, 1)[1:].unsqueeze(0)

    records = recorded(roofline, ops)
    moved = [r.bytes for r in records if r.op_class != "view"]
    assert moved == [36 * size, 28 * size, 28 * size, 36 * size, 24 * size]
    assert all(r.dtype == dtype for r in records)
    views = [r for r in records if r.op_class == "view"]
    assert {r.name.split(".")[1] for r in views} >= {"view", "permute", "transpose", "slice", "unsqueeze", "expand"}
    assert all(r.bytes == 0 and r.flops == 0 for r in views)


def test_views_move_nothing_and_every_other_operator_has_a_bound(roofline, tiny_records):
    assert any(r.op_class == "view" for r in tiny_records)
    for record in tiny_records:
        bound, resource = roofline.op_bound(record, RATES)
        if record.op_class == "view":
            assert record.bytes == 0 and (bound, resource) == (0.0, "none"), record
        else:
            assert bound > 0 and resource in {"matmul", "bandwidth", "exp"}, record


def test_bound_is_the_largest_of_the_three_and_bf16_uses_its_peak(roofline):
    record = roofline.OpRecord("aten.x.default", "other", 1.0, 2 * 10**9, 10**8, 10**6, torch.float32, ())
    assert roofline.op_bounds(record, RATES) == pytest.approx({"matmul": 0.02, "bandwidth": 0.01, "exp": 0.001})
    assert roofline.op_bound(record, RATES) == (pytest.approx(0.02), "matmul")
    assert roofline.op_bound(record._replace(dtype=torch.bfloat16), RATES) == (pytest.approx(0.01), "bandwidth")
    assert roofline.op_bound(record._replace(exps=10**8), RATES) == (pytest.approx(0.1), "exp")


def test_summary_and_table_of_a_pass(roofline, tiny):
    net, x = tiny

    def one_pass():
        with torch.no_grad():
            return net(x)

    records, wall = roofline.record_pass(one_pass)
    summary = roofline.roofline_summary(records, RATES, wall)
    bounds = [roofline.op_bound(r, RATES)[0] for r in records]
    assert summary["roofline_s"] == pytest.approx(math.fsum(bounds))
    assert summary["ratio"] == pytest.approx(wall / summary["roofline_s"])
    matmul = math.fsum(roofline.op_bounds(r, RATES)["matmul"] for r in records)
    assert summary["matmul_bound_s"] == pytest.approx(matmul)
    assert summary["matmul_ratio"] == pytest.approx(wall / matmul)
    assert summary["framework_s"] == pytest.approx(wall - math.fsum(r.seconds for r in records))
    classes = summary["classes"]
    assert list(classes) == [c for c in roofline.CLASSES if any(r.op_class == c for r in records)]
    assert sum(row["ops"] for row in classes.values()) == len(records) == summary["ops"]
    assert classes["attention"]["bound_by"] in {"matmul", "bandwidth", "exp"} and classes["view"]["bound_by"] == "none"

    table = roofline.roofline_table(records, RATES, wall)
    assert table[0].startswith("| class |") and len(table) == 2 + len(classes) + 3
    assert [line.split("|")[1].strip() for line in table[2 : 2 + len(classes)]] == list(classes)
    total = table[-2].split("|")
    assert total[1].strip() == "**pass**" and total[-2].strip() == f"{wall / summary['roofline_s']:.1f}x"
    assert table[-3].startswith("| framework") and table[-1].startswith("| matmul-only bound")


def test_repeated_passes_give_one_record_per_operator(roofline, tiny):
    net, x = tiny
    calls = []

    def one_pass():
        calls.append(1)
        with torch.no_grad():
            return net(x)

    records, wall = roofline.record_pass(one_pass, warmup=1, repeats=2)
    assert len(calls) == 1 + 2 + 2 and wall > 0
    assert [r.name for r in records] == [r.name for r in recorded(roofline, lambda: net(x))]


def test_machine_rates_are_positive(roofline):
    rates = roofline.machine_rates(
        matmul_n=64, matmul_repeats=1, copy_mib=1, copy_repeats=1, exp_elements=4096, exp_repeats=1
    )
    assert set(rates) == {"fp32", "bf16", "bandwidth", "exp"} and all(v > 0 for v in rates.values())
