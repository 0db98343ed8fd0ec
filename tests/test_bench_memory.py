"""bench/memory.py: the training-memory count behind docs/memory.md, checked at a tiny grid."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))


def _nets():
    from memory import networks

    return networks(yaml.safe_load((REPO / "config.yaml").read_text()))


def test_fake_tensors_count_what_a_real_training_step_holds():
    """The 256^3 figures are counted on fake tensors: at a grid the CPU can run, the count equals
    the real step's, byte for byte, the AdamW state of the second step included.

    The real step runs bf16 autocast on any CPU, as the GPU would; its values are not asserted: the
    bytes do not depend on them, and where this CPU's bf16 convolutions are unsound (AMD EPYC with
    AVX-512 bf16, docs/upstream/onednn-bf16-conv3d-wgrad.md) they come out NaN at random."""
    from memory import measure

    arch, network, train, loss = _nets()["mae"]
    real = measure(arch, network, train, loss, 32, fake=False)
    fake = measure(arch, network, train, loss, 32, fake=True)
    assert (fake["peak"], fake["fwd_bwd"], fake["opt"]) == (real["peak"], real["fwd_bwd"], real["opt"])
    # parameters, gradients and AdamW's two moments: at least 16 bytes per parameter at the peak
    assert real["peak"] >= 16 * real["params"]


def test_cuda_autocast_dtypes_cost_group_norm_networks_more():
    """CUDA's autocast runs group_norm in float32 (CPU's does not): SegResNet's count grows with
    CUDA's dtypes, the MAE's instance-normed UNet's does not."""
    from memory import measure

    nets = _nets()
    seg = [measure(*nets["segresnet"], 32, fake=True, cuda_policy=c)["peak"] for c in (False, True)]
    mae = [measure(*nets["mae"], 32, fake=True, cuda_policy=c)["peak"] for c in (False, True)]
    assert seg[1] > seg[0]
    assert mae[1] == mae[0]
