"""A released model as a MONAI bundle: ``skullrecon export NAME --bundle DIR``.

The layout and the metadata's mandatory keys follow MONAI's Bundle Specification
(docs.monai.io, "MONAI Bundle Specification"):

    DIR/configs/metadata.json   version, changelog, monai/pytorch/numpy versions, required packages,
                                task, description, authors, copyright, network_data_format (the
                                network's input and output tensors), plus the card's metrics
    DIR/configs/inference.json  the inference config ``python -m monai.bundle run`` runs
    DIR/models/model.pt         the network's state dict (torch.save), its SHA-256 in inference.json
    DIR/docs/README.md          the model card and how to run the bundle
    DIR/docs/license.txt        the card's licence text (weights trained on SkullFix: CC BY-NC-SA 4.0)

The inference config builds the network from ``network_def`` (MONAI's network, as
:func:`skullrecon.models.network_for` builds it from the release's spec), loads ``model.pt``
after checking its SHA-256, and hands both to :func:`skullrecon.infer.reconstruct_file`, the function
``skullrecon reconstruct`` runs: preprocessing, the network, post-processing and the written files are
skullrecon's, so the bundle's reconstruction is the command's, voxel for voxel (tests/test_bundle.py).
skullrecon must be installed where the bundle runs (``required_packages_version``)::

    python -m monai.bundle run --config_file DIR/configs/inference.json \\
        --bundle_root DIR --input_file defective.nrrd --output_dir out/
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["export_bundle", "load_weights", "run", "MANDATORY_METADATA", "TENSOR_KEYS"]

#: The metadata keys the MONAI Bundle Specification calls mandatory, and those of a tensor format
#: (the specification's ``optional_packages_version`` under the name MONAI 1.6 maps it to).
MANDATORY_METADATA = ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                      "task", "description", "authors", "copyright", "network_data_format")
TENSOR_KEYS = ("type", "format", "modality", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
               "channel_def")
#: The schema model-zoo bundles name (verify_metadata downloads it; not reachable offline).
SCHEMA = "https://github.com/Project-MONAI/MONAI-extra-test-data/releases/download/0.8.1/meta_schema_20240725.json"

PAPER = ("Wodzinski M., Hemmerling D., Daniol M. Automatic Cranial Defect Reconstruction with Self-Supervised Deep "
         "Deformable Masked Autoencoders (2024).")
DATA = ("Kodym O., Li J., et al. SkullBreak / SkullFix - Dataset for automatic cranial implant design. Data in Brief 35 "
        "(2021) 106902. Li J., Egger J., et al. AutoImplant 2020 (MICCAI).")


def load_weights(network: Any, ckpt_path: str, sha256: str, device: str = "auto") -> Any:
    """``network`` (the config's ``network_def``) with ``model.pt``'s weights, on ``device``, in eval mode;
    a ``model.pt`` whose bytes differ from ``sha256`` is refused before it is unpickled."""
    import torch

    from skullrecon.models import pick_device

    data = Path(ckpt_path).read_bytes()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise ValueError(f"{ckpt_path}: SHA-256 {got[:16]}... is not the {sha256[:16]}... the bundle's inference "
                         "config gives; refusing to load it")
    network.load_state_dict(torch.load(io.BytesIO(data), map_location="cpu", weights_only=True))
    return network.to(pick_device(device)).eval()


def run(input_file: str, output_dir: str, network: Any, spec: dict[str, Any], ckpt_path: str, device: str = "auto",
        stl: bool = True) -> dict[str, Any]:
    """The bundle's ``run``: :func:`skullrecon.infer.reconstruct_file` with the bundle's network; prints
    and returns its result (paths of the implant, reconstruction and STL; seconds; warnings)."""
    from skullrecon.infer import reconstruct_file

    result = reconstruct_file(input_file, ckpt_path, output_dir, device=device, stl=stl, network=(network, spec))
    print(json.dumps(result, indent=2))
    for warning in result["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)
    return result


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("monai", "torch", "numpy", "nibabel", "pynrrd", "scipy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = ""
    return out


def _metadata(card: dict[str, Any], spec: dict[str, Any], model_sha: str) -> dict[str, Any]:
    from skullrecon import __version__

    v = _versions()
    grid, test = card["grid"], card["metrics"].get("test", {})
    gen = card["metrics"].get("generalisation", {})
    packages = {"skullrecon": __version__, "nibabel": v["nibabel"], "pynrrd": v["pynrrd"], "scipy": v["scipy"]}
    what = ("the complete skull (the defective skull's bone kept, the missing bone added)" if spec["task"] == "reconstruct"
            else "the implant (the missing bone only)")
    return {
        "schema": SCHEMA,
        "version": __version__,
        "changelog": {__version__: f"release {card['name']} of skullrecon {__version__} (`skullrecon export`)"},
        "monai_version": v["monai"],
        "pytorch_version": v["torch"].split("+")[0],
        "numpy_version": v["numpy"],
        # skullrecon runs the preprocessing, post-processing and file writing; the specification's
        # optional_packages_version, a name MONAI 1.6 reads as deprecated for this one
        "required_packages_version": packages,
        "name": f"skullrecon_{card['name']}",
        "task": "Cranial implant design: the implant for a defective skull (binary skull segmentation from CT, "
                "NRRD or NIfTI), as a volume on the input's grid and an STL mesh",
        "description": f"{card['method']} ({card['arch']}, {card['parameters']:,} parameters) on a {grid}^3 grid, "
                       f"released by skullrecon as {card['name']}. The network predicts {what} from the defective skull "
                       f"cropped and resampled to {grid}^3; the inference config reconstructs one file with skullrecon's "
                       "own preprocessing and post-processing (docs/README.md).",
        "authors": "skullrecon contributors (the method: Wodzinski, Hemmerling and Daniol, 2024)",
        "copyright": "Code: skullrecon contributors, MIT. Weights: trained on SkullFix (CC BY-NC-SA 4.0), see docs/license.txt",
        "intended_use": "Research on cranial implant design. Not a medical device; not for clinical use.",
        "data_source": card["training"]["data"],
        "data_type": "nrrd",
        "references": [PAPER, DATA],
        "eval_metrics": {"test_cases": test.get("cases"), "mean_dice": test.get("dsc_mean"),
                         "median_dice": test.get("dsc_median"), "mean_boundary_dice_10mm": test.get("bdsc_mean"),
                         "mean_hd95_mm": test.get("hd95_mean"), "new_defects_cases": gen.get("cases"),
                         "new_defects_mean_dice": gen.get("dsc_mean")},
        "skullrecon_release": {"name": card["name"], "file_sha256": card["sha256"], "model_pt_sha256": model_sha,
                               "training_run": card["training"]["run"], "training_commit": card["training"]["commit"],
                               "trained_with": {"torch": card["training"].get("torch"), "monai": card["training"].get("monai")}},
        "network_data_format": {
            "inputs": {"image": {
                "type": "image", "format": "segmentation", "modality": "CT", "num_channels": 1,
                "spatial_shape": [grid, grid, grid], "dtype": "float32", "value_range": [0, 1], "is_patch_data": False,
                "channel_def": {"0": "defective skull bone (1) and background (0), cropped to the skull with a "
                                     f"{spec['margin']} margin and resampled to {grid}^3"}}},
            "outputs": {"pred": {
                "type": "image", "format": "segmentation", "modality": "CT", "num_channels": 1,
                "spatial_shape": [grid, grid, grid], "dtype": "float32", "value_range": [],
                "is_patch_data": False,
                "channel_def": {"0": f"logit of {what}; sigmoid > {spec['postprocess']['threshold']} is bone"}}},
        },
    }


def _inference(spec: dict[str, Any], model_sha: str) -> dict[str, Any]:
    return {
        "imports": ["$import skullrecon.bundle as skullrecon_bundle"],
        "bundle_root": ".",
        "device": "auto",
        "input_file": "defective.nrrd",
        "output_dir": "$@bundle_root + '/eval'",
        "stl": True,
        "ckpt_path": "$@bundle_root + '/models/model.pt'",
        "ckpt_sha256": model_sha,
        "model_spec": spec,
        "network_def": {"_target_": "skullrecon.models.network_for", "spec": "@model_spec"},
        "network": "$skullrecon_bundle.load_weights(@network_def, @ckpt_path, @ckpt_sha256, @device)",
        "run": ["$skullrecon_bundle.run(@input_file, @output_dir, @network, @model_spec, @ckpt_path, @device, @stl)"],
    }


def _readme(card: dict[str, Any]) -> str:
    from skullrecon.release import card_markdown

    return "\n".join([
        f"# skullrecon {card['name']} as a MONAI bundle", "",
        "The implant for a defective skull (a binary skull segmentation, NRRD or NIfTI, any spacing): "
        "`implant.nrrd` (or `.nii.gz`, the input's grid and header), `reconstruction.*` and `implant.stl` (mm). "
        "Needs skullrecon installed (`pip install skullrecon`, the version in `configs/metadata.json`).", "",
        "```bash",
        "python -m monai.bundle run --config_file configs/inference.json --bundle_root . \\",
        "    --input_file defective.nrrd --output_dir out/",
        "```", "",
        "The result equals `skullrecon reconstruct defective.nrrd --model " + card["name"] + " --out out/` voxel for "
        "voxel: the config builds the MONAI network (`network_def`), loads `models/model.pt` (its SHA-256 is checked) "
        "and runs skullrecon's preprocessing, network, post-processing and file writing. `--device cpu` or `cuda` "
        "overrides the device (default: the GPU when present); `--stl false` skips the mesh.", "",
        "Licence: `docs/license.txt`.", "",
        card_markdown(card).replace("\n## ", "\n### ").replace("# Model card:", "## Model card:", 1),
    ])


def export_bundle(name: str, out: str | Path, folder: str | Path | None = None) -> Path:
    """Write released model ``name`` (from ``folder``, default the models folder) as a MONAI bundle in
    ``out`` (a new or empty folder). Returns ``out``."""
    import torch

    from skullrecon.io import atomic_path
    from skullrecon.models import _read, validate_spec
    from skullrecon.release import models_dir, resolve_model

    folder = Path(folder) if folder else models_dir()
    card_path = folder / f"{name}.json"
    if not card_path.is_file():
        raise FileNotFoundError(f"{name}: not a released model in {folder} (`skullrecon models` lists them)")
    card = json.loads(card_path.read_text())
    if card.get("refiner"):  # the bundle's inference config runs one network
        raise ValueError(f"{name}: a two-stage release; a bundle holds one network: export its first stage, "
                         f"{card['single_stage']['name']}")
    path, sha256 = resolve_model(name, folder)
    blob = _read(path, sha256)  # the release's bytes, checked against its card
    spec = json.loads(json.dumps(blob["spec"]))  # as the JSON config will give it back (tuples become lists)
    validate_spec(spec, path, need_postprocess=True)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out}: --bundle must be a new or empty folder (nothing is replaced)")
    buf = io.BytesIO()
    torch.save(blob["state_dict"], buf)
    weights = buf.getvalue()
    model_sha = hashlib.sha256(weights).hexdigest()
    for sub in ("configs", "models", "docs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "models" / "model.pt") as tmp:
        tmp.write_bytes(weights)
    (out / "configs" / "metadata.json").write_text(json.dumps(_metadata(card, spec, model_sha), indent=2) + "\n")
    (out / "configs" / "inference.json").write_text(json.dumps(_inference(spec, model_sha), indent=2) + "\n")
    (out / "docs" / "README.md").write_text(_readme(card))
    (out / "docs" / "license.txt").write_text(
        f"Weights ({card['name']}):\n{card['licence']}\n\nCode (skullrecon, which the inference config runs): MIT.\n")
    return out
