"""keep_freed_memory: an ESC forward reuses the memory the previous one freed instead of
faulting it in again (glibc)."""

import json
import subprocess
import sys
import textwrap

import pytest

#: ESC-light x2 (random weights) on a 384x384 input, twice with glibc's defaults and then twice
#: after keep_freed_memory(), in one process; prints the minor page faults of the second pass of
#: each phase. 64-channel activations are 36 MiB there: over glibc's largest dynamic mmap
#: threshold (32 MiB), so the default phase cannot adapt them away (at 192x192 it sometimes did).
SCRIPT = textwrap.dedent(
    """
    import json, resource, torch
    import esc_arch

    net = esc_arch.build_preset("ESC-light", 2).eval()
    x = torch.rand(1, 3, 384, 384)

    def faults():
        with torch.no_grad():
            net(x)
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            net(x)
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

    default = faults()
    applied = esc_arch.keep_freed_memory()
    print(json.dumps({"default": default, "applied": applied, "kept": faults()}))
    """
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_stops_page_faults(repo_root):
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout.strip().splitlines()[-1])
    assert counts["applied"] is True
    # with glibc's defaults every pass maps its large activations afresh and faults them in
    assert counts["default"] > 10_000 and counts["kept"] < counts["default"] / 10, counts


def test_esc_upscale_keeps_freed_memory_on_the_cpu(esc_cli, tiny_net, tmp_path, image_dir, monkeypatch):
    import torch

    from esc_arch.runtime import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True) or True)
    model = tmp_path / "tiny_x2.pth"
    torch.save({"params_ema": tiny_net().state_dict()}, model)
    result = esc_cli("upscale", "-i", image_dir / "val/bird.png", "-o", tmp_path / "out", "-m", model)
    assert result.returncode == 0, result.stderr
    assert calls == [True]
