"""The networks (MONAI, not rewritten) and self-contained model files.

A trained network file holds the weights with what training determined (architecture and its
arguments, grid, preprocessing margin, task, training settings). The pipeline's deliverable model
file (``models/<method>.pt``) adds the run's post-processing settings with :func:`bundle_model`, so
that single file is enough to reconstruct a new skull, while changing post-processing never
retrains a network. Files are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skullrecon.io import atomic_path

__all__ = ["ARCHITECTURES", "build_network", "save_model", "load_model", "bundle_model", "pick_device"]

# name -> MONAI class path; the config schema lists the same names.
ARCHITECTURES = {
    "unet": "UNet",
    "unetr": "UNETR",
    "swinunetr": "SwinUNETR",
    "attentionunet": "AttentionUnet",
    "segresnet": "SegResNet",
}


def build_network(arch: str, kwargs: dict[str, Any], grid: int) -> nn.Module:
    """Build a one-channel-in, one-channel-out 3-D MONAI network.

    Args:
        arch: one of :data:`ARCHITECTURES` (the MAE backbone is ``unet`` with residual units).
        kwargs: the network's own constructor arguments from the config (channels, strides, ...).
        grid: cubic input size; UNETR needs it as ``img_size``, SwinUNETR needs it divisible by 32.
    """
    from monai.networks import nets

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    args: dict[str, Any] = {"in_channels": 1, "out_channels": 1, **kwargs}
    if arch == "unetr":
        args["img_size"] = (grid,) * 3
    else:
        args.setdefault("spatial_dims", 3)
    if arch == "swinunetr" and grid % 32:
        raise ValueError(f"SwinUNETR needs a grid divisible by 32, got {grid}")
    for key in ("channels", "strides"):
        if key in args:
            args[key] = tuple(args[key])
    return getattr(nets, ARCHITECTURES[arch])(**args)


def save_model(path: str | os.PathLike, net: nn.Module, spec: dict[str, Any]) -> Path:
    """Write weights and ``spec`` (plain Python types only) atomically."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": "skullrecon-model/1", "spec": spec, "state_dict": state}, tmp)
    return Path(path)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable skullrecon model file ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "skullrecon-model/1":
        raise ValueError(f"{path}: not a skullrecon model file")
    return blob


def bundle_model(network_path: str | os.PathLike, postprocess: dict[str, Any], out_path: str | os.PathLike) -> Path:
    """The deliverable model file: a trained network file plus the post-processing settings.

    Kept apart from training so that post-processing settings never enter a training job.
    """
    from skullrecon.postprocess import PostprocessConfig

    blob = _read(Path(network_path))
    PostprocessConfig.from_dict(postprocess)  # unknown or bad keys fail here, not in a designer's hands
    blob["spec"] = {**blob["spec"], "postprocess": dict(postprocess)}
    with atomic_path(out_path) as tmp:
        torch.save(blob, tmp)
    return Path(out_path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from a model file alone; returns ``(network in eval mode, spec)``."""
    path = Path(path)
    blob = _read(path)
    spec = blob["spec"]
    net = build_network(spec["arch"], spec["network"], spec["grid"])
    net.load_state_dict(blob["state_dict"])
    return net.to(device).eval(), spec


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> the GPU when there is one, else the CPU; 'cuda' without a usable GPU is an error.

    'auto' is an error too when the scheduler gave this job a GPU (``CUDA_VISIBLE_DEVICES`` names
    one) that torch cannot use: a CPU-only torch build on a GPU node would otherwise train on the
    CPU for a whole time limit. The check costs no more than importing torch, so a misplaced job
    stops within seconds, naming its node.
    """
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda" if device == "auto" else device)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    allocated = visible not in ("", "-1", "none", "NoDevFiles")
    if device == "auto" and not allocated:
        return torch.device("cpu")
    why = (f"the job was given GPU(s) CUDA_VISIBLE_DEVICES={visible}" if allocated
           else f"device {device!r} was asked for")
    raise ValueError(f"no usable CUDA GPU on node {platform.node()}: {why}, but torch {torch.__version__} "
                     f"(CUDA build {torch.version.cuda}) finds none; fix the node or the torch install, "
                     "or set device: cpu")
