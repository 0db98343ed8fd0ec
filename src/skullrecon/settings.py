"""Building the settings dataclasses from config sections, refusing keys they do not know."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

__all__ = ["baseline_train", "from_mapping", "apply_override", "is_mae"]

T = TypeVar("T")


def from_mapping(cls: type[T], d: Mapping[str, Any], what: str, tuples: tuple[str, ...] = ()) -> T:
    """``cls(**d)`` after checking every key is a field of ``cls``.

    Args:
        what: how the error names the settings (e.g. "training").
        tuples: fields given as YAML lists that the dataclass keeps as tuples.

    Raises:
        ValueError: naming the unknown keys and the known ones.
    """
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {unknown}; known: {sorted(known)}")
    kwargs = {k: tuple(v) if k in tuples else v for k, v in d.items()}
    return cls(**kwargs)


def is_mae(method: str) -> bool:
    """Whether a method name (``mae_d``, ``unet``, ...) is an MAE variant: one network for every dataset,
    restoring the skull, validated by ``val_restored_dsc``; a baseline is one network per dataset,
    predicting the implant (the workflow's ``task_of`` makes the same split)."""
    return method.startswith("mae_")


def baseline_train(config: Mapping[str, Any], method: str, dataset: str | None = None) -> dict[str, Any]:
    """The ``baselines.train`` section of a run config for ``method``: its own epoch budget from
    ``baselines.epochs_per_method`` where given, and from ``baselines.epochs_per_dataset[dataset]`` above that
    (the five-kind SkullBreak-like set has five pairs a skull), as the ``train_baseline`` rule passes it."""
    baselines = config["baselines"]
    train = dict(baselines["train"])
    for own in ((baselines.get("epochs_per_method") or {}).get(method),
                ((baselines.get("epochs_per_dataset") or {}).get(dataset) or {}).get(method)):
        if own is not None:
            train["epochs"] = own
    return train


def apply_override(config: dict[str, Any], dotted: str) -> None:
    """Apply one command-line ``a.b.c=value`` override to a config in place (the value parsed as YAML;
    missing sections are created)."""
    import yaml

    key, _, value = dotted.partition("=")
    *path, last = key.split(".")
    node = config
    for part in path:
        node = node.setdefault(part, {})
    node[last] = yaml.safe_load(value)
