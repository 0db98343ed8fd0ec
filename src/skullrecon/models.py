"""The networks (MONAI, not rewritten) and self-contained model files.

A trained network file holds the weights with what training determined (architecture and its
arguments, grid, preprocessing margin, task, training settings). The pipeline's deliverable model
file (``models/<method>.pt``) adds the run's post-processing settings with :func:`bundle_model`, so
that single file is enough to reconstruct a new skull, while changing post-processing never
retrains a network. Files are read with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skullrecon.io import atomic_path

__all__ = ["ARCHITECTURES", "MAX_GRID", "build_network", "save_model", "load_model", "bundle_model", "validate_spec",
           "pick_device", "KeepInput", "network_for"]

#: Largest cubic grid a model file may ask for (the paper uses 256); a grid of 100000 would try
#: to allocate petabytes before failing.
MAX_GRID = 512

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


class KeepInput(nn.Module):
    """A network whose output keeps the input's bone: logits set to ``KEPT_LOGIT`` wherever the
    input is 1, the network's own elsewhere. For an MAE trained to add bone (``mae.loss.added``):
    the reconstruction is the defective skull plus what the network adds, on the grid as after it.
    """

    KEPT_LOGIT = 30.0  # sigmoid(30) rounds to 1.0 in float32

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        given = x[:, :1] > 0.5  # the bone given (a second stage's second channel is the first stage's output)
        return torch.where(given, torch.full_like(logits, self.KEPT_LOGIT), logits)


def network_for(spec: dict[str, Any]) -> nn.Module:
    """The network a model spec describes (:func:`build_network`, wrapped in :class:`KeepInput`
    when ``spec['keep_input']``)."""
    net = build_network(spec["arch"], spec["network"], spec["grid"])
    return KeepInput(net) if spec.get("keep_input") else net


def save_model(path: str | os.PathLike, net: nn.Module, spec: dict[str, Any]) -> Path:
    """Write weights and ``spec`` (plain Python types only) atomically."""
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": "skullrecon-model/1", "spec": spec, "state_dict": state}, tmp)
    return Path(path)


def _read(path: Path, sha256: str | None = None) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model file not found")
    data = path.read_bytes()  # read once: hashed and loaded from the same bytes
    if sha256 is not None:
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            raise ValueError(f"{path}: SHA-256 {got[:16]}... is not the {sha256[:16]}... its model card gives; "
                             "the file was altered or damaged, refusing to load it")
    try:
        blob = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: not a readable skullrecon model file ({err})") from err
    if not isinstance(blob, dict) or blob.get("format") != "skullrecon-model/1":
        raise ValueError(f"{path}: not a skullrecon model file")
    return blob


def bundle_model(network_path: str | os.PathLike, postprocess: dict[str, Any], out_path: str | os.PathLike) -> Path:
    """The deliverable model file: a trained network file plus the post-processing settings.

    Kept apart from training so that post-processing settings never enter a training job.
    """
    network_path = Path(network_path)
    blob = _read(network_path)
    spec = {**blob["spec"], "postprocess": dict(postprocess)}
    validate_spec(spec, network_path, need_postprocess=True)  # bad settings fail here, not in a designer's hands
    blob["spec"] = spec
    with atomic_path(out_path) as tmp:
        torch.save(blob, tmp)
    return Path(out_path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               need_postprocess: bool = False, sha256: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network from a model file alone; returns ``(network in eval mode, spec)``.

    A trained network file (``networks/``) has no post-processing settings; reconstruction needs
    them (``need_postprocess``), so it takes a bundled ``models/`` file. With ``sha256`` (a released
    model's card) a file whose bytes differ is refused before it is unpickled, and on a CPU the
    release's TorchScript copy of the network is used when it has one (:func:`embed_script`):
    it loads in a fraction of a second, where importing MONAI to rebuild the network takes seconds.
    """
    path = Path(path)
    blob = _read(path, sha256)
    spec = blob.get("spec")
    validate_spec(spec, path, need_postprocess)
    if not isinstance(blob.get("state_dict"), dict):
        raise ValueError(f"{path}: model file has no weights ('state_dict')")
    if sha256 is not None and torch.device(device).type == "cpu" and isinstance(blob.get("script"), bytes):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load's notice; see embed_script
            return torch.jit.load(io.BytesIO(blob["script"]), map_location="cpu").eval(), spec
    return _rebuilt(spec, blob["state_dict"], path).to(device), spec


def _rebuilt(spec: dict[str, Any], state_dict: dict[str, Any], path: str | os.PathLike) -> nn.Module:
    """The MONAI network ``spec`` describes with ``state_dict`` loaded, in eval mode (``path`` names the file in errors)."""
    try:
        net = network_for(spec)
        net.load_state_dict(state_dict)
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: the weights do not fit the network its spec describes ({first})") from err
    return net.eval()


def embed_script(blob: dict[str, Any]) -> dict[str, Any]:
    """``blob`` (a model file's contents) with a TorchScript copy of its network under ``script``,
    traced at its grid on the CPU, or without one where the copy's output on a test input is not
    equal, bit for bit, to the MONAI network's (then loading rebuilds the MONAI network as before).

    The weights stay in ``state_dict``: the script is only a faster way to load the same network
    (TorchScript is deprecated upstream; when torch drops it, loading falls back to MONAI).
    """
    import warnings

    spec = blob["spec"]
    net = _rebuilt(spec, blob["state_dict"], "model")
    # at the model's grid (a second stage: a 64^3 window of its grid, as it takes windows of any size)
    g = spec["grid"] if spec["task"] != "refine" else min(spec["grid"], 64)
    x = torch.zeros(1, spec["network"].get("in_channels", 1), g, g, g)
    x[..., g // 4: 3 * g // 4, g // 4: 3 * g // 4, g // 3: g // 2] = 1  # a slab: some input, not all empty
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation notice
        traced = torch.jit.trace(net, x)
        buf = io.BytesIO()
        torch.jit.save(traced, buf)
        script = _without_debug_records(buf.getvalue())
        again = torch.jit.load(io.BytesIO(script), map_location="cpu").eval()
        same = all(torch.equal(again(t), net(t)) for t in (x, 1 - x))
    out = {k: v for k, v in blob.items() if k != "script"}
    if same:
        out["script"] = script
    return out


def _without_debug_records(archive: bytes) -> bytes:
    """A TorchScript archive without its ``*.debug_pkl`` records: they map the code to the source
    files it was traced from, with the absolute paths of the machine that made it (a released file
    must not carry them), and loading does not need them."""
    import zipfile

    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            if not info.filename.endswith(".debug_pkl"):
                dst.writestr(info, src.read(info))
    return out.getvalue()


def validate_spec(spec: Any, path: str | os.PathLike = "model", need_postprocess: bool = True) -> None:
    """Raise ValueError (naming ``path``) unless ``spec`` holds what reconstruction reads, with sane values.

    Post-processing settings are checked when present, and required with ``need_postprocess``.
    """
    from skullrecon.postprocess import PostprocessConfig

    if not isinstance(spec, dict):
        raise ValueError(f"{path}: model file has no spec")
    missing = [k for k in ("arch", "network", "grid", "margin", "task") if k not in spec]
    if need_postprocess and "postprocess" not in spec:
        raise ValueError(f"{path}: a trained network without post-processing settings; reconstruct with the "
                         "pipeline's models/<method>.pt (the network bundled with them)")
    if missing:
        raise ValueError(f"{path}: model spec lacks {missing}")
    if spec["arch"] not in ARCHITECTURES:
        raise ValueError(f"{path}: model spec arch {spec['arch']!r} is not one of {sorted(ARCHITECTURES)}")
    net = spec["network"]
    if not isinstance(net, dict) or not all(isinstance(k, str) for k in net):
        raise ValueError(f"{path}: model spec 'network' must be a mapping of constructor arguments, got {net!r}")
    channels = {"in_channels": 2 if spec.get("task") == "refine" else 1, "out_channels": 1}  # refine: + first stage
    for key, want in channels.items():
        if net.get(key, 1) != want:
            raise ValueError(f"{path}: model spec network {key} is {net[key]!r}; this model takes "
                             f"{channels['in_channels']} channel(s) and gives 1")
    grid = spec["grid"]
    if isinstance(grid, bool) or not isinstance(grid, int) or not 16 <= grid <= MAX_GRID:
        raise ValueError(f"{path}: model spec grid must be a whole number from 16 to {MAX_GRID}, got {grid!r}")
    margin = spec["margin"]
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < 1:
        raise ValueError(f"{path}: model spec margin must be a fraction in [0, 1), got {margin!r}")
    if spec["task"] not in ("reconstruct", "implant", "refine"):
        raise ValueError(f"{path}: model spec task must be 'reconstruct', 'implant' or 'refine', got {spec['task']!r}")
    if "postprocess" not in spec:
        return
    if not isinstance(spec["postprocess"], dict):
        raise ValueError(f"{path}: model spec 'postprocess' must be a mapping, got {spec['postprocess']!r}")
    try:
        PostprocessConfig.from_dict(spec["postprocess"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: model spec {err}") from err


def pick_device(device: str = "auto") -> torch.device:
    """'auto' -> the GPU when there is one, else the CPU; 'cuda' without a usable GPU is an error.

    'auto' is an error too when the scheduler gave this job a GPU (``CUDA_VISIBLE_DEVICES`` names
    one) that torch cannot use: a CPU-only torch build on a GPU node would otherwise train on the
    CPU for a whole time limit. The check costs no more than importing torch, so a misplaced job
    stops within seconds, naming its node.
    """
    if device != "auto":
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError, ValueError):
            raise ValueError(f"device {device!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
        if dev.type not in ("cpu", "cuda"):
            raise ValueError(f"device {device!r} is not supported (use auto, cpu, cuda or cuda:N)")
        if dev.type == "cpu":
            return dev
    if torch.cuda.is_available():
        return torch.device("cuda") if device == "auto" else dev
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    allocated = visible not in ("", "-1", "none", "NoDevFiles")
    if device == "auto" and not allocated:
        return torch.device("cpu")
    why = (f"the job was given GPU(s) CUDA_VISIBLE_DEVICES={visible}" if allocated
           else f"device {device!r} was asked for")
    raise ValueError(f"no usable CUDA GPU on node {platform.node()}: {why}, but torch {torch.__version__} "
                     f"(CUDA build {torch.version.cuda}) finds none; fix the node or the torch install, "
                     "or set device: cpu")
