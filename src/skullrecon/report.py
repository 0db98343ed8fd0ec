"""The paper's outputs: per-case metrics, Table I, Figures 3 and 4, and run provenance.

Table I is computed from the per-case CSV files only, and shows the paper's published values
beside ours, mean and median (``workflow/report/paper_table1.csv``), with the number of cases and of failures
(empty implants, counted with DSC 0 and no HD95).
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from skullrecon.io import read_volume
from skullrecon.metrics import metrics_for_files
from skullrecon.settings import is_mae

__all__ = [
    "METHOD_LABELS",
    "evaluate_method",
    "summarise",
    "read_paper_table",
    "dataset_label",
    "write_table1",
    "write_rows_table1",
    "plot_figure4",
    "plot_figure3",
    "plot_masking_examples",
    "plot_training_curves",
    "write_provenance",
]

METHOD_LABELS = {
    "mae_d": "MAE (D)",
    "mae_nd": "MAE (ND)",
    "unet": "UNet",
    "unetr": "UNETR",
    "swinunetr": "SwinUNETR",
    "attentionunet": "AttentionUnet",
    "segresnet": "SegResNet",
}
#: A second stage's row (:mod:`skullrecon.refine`): ``<method>_refined``, beside the method's single-stage row.
REFINED_SUFFIX = "_refined"
#: The surface stage's row (:mod:`skullrecon.surfaces`): ``<method>_surface``.
SURFACE_SUFFIX = "_surface"
#: Each second stage's row suffix and its label in tables and figures.
SECOND_STAGES = {REFINED_SUFFIX: "2nd stage", SURFACE_SUFFIX: "surfaces"}


def method_label(method: str) -> str:
    """A method's name in tables and figures (``mae_d_refined``: "MAE (D) + 2nd stage"; ``mae_d_surface``:
    "MAE (D) + surfaces")."""
    for suffix, stage in SECOND_STAGES.items():
        if method.endswith(suffix):
            first = method.removesuffix(suffix)
            return f"{METHOD_LABELS.get(first, first)} + {stage}"
    return METHOD_LABELS.get(method, method)


def _second_stage(stem: str) -> bool:
    return any(stem.endswith(suffix) for suffix in SECOND_STAGES)


DATASET_LABELS = {"skullbreak": "SkullBreak", "skullfix": "SkullFix",
                  "skullbreaklike": "SkullBreak-like (five kinds in real SkullFix skulls)"}  # short: a figure title
#: A dataset made like one of the paper's: its block shows that dataset's published values beside it.
PAPER_EQUIVALENT = {"skullbreaklike": "skullbreak"}
GENERALISATION_SUFFIX = "_generalisation"  # <source>_generalisation: new defects on its test skulls
METRICS = ("dsc", "bdsc", "hd95")
METRIC_LABELS = {"dsc": "DSC", "bdsc": "BDSC", "hd95": "HD95 [mm]"}


def evaluate_method(implants_dir: str | Path, cases_tsv: str | Path, out_csv: str | Path, margin_mm: float = 10.0) -> pd.DataFrame:
    """Metrics of every test case of one method on one dataset, one CSV row per case.

    A case with a missing implant file is an error (nothing is silently skipped); a case
    without ground truth is an error too, since it cannot be scored; so is an implant file on
    another grid than the case's (shape, spacing, direction, origin).
    """
    cases = pd.read_csv(cases_tsv, sep="\t", dtype=str, keep_default_na=False)
    note = Path(cases_tsv).parent / "scored_on.txt"  # written by preprocess_split for the test split
    scored = note.read_text().strip() if note.is_file() else ""
    rows = []
    for case in cases.itertuples():
        if not case.implant:
            raise FileNotFoundError(f"{case.defective}: no ground-truth implant for test case {case.name}")
        # the three files must share one grid (a prediction on another grid is refused, naming it)
        result = metrics_for_files(Path(implants_dir) / f"{case.name}.nrrd", case.implant, case.defective, margin_mm)
        rows.append({"case": case.name, "defect_type": case.defect_type, **result, "scored_on": scored})
        print(f"{case.name}: {result}")
    table = pd.DataFrame(rows)
    Path(out_csv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_csv, index=False)
    return table


def _load_metrics(csv_paths: Sequence[str | Path]) -> pd.DataFrame:
    frames = []
    for path in csv_paths:
        path = Path(path)
        frame = pd.read_csv(path)
        frame["dataset"], frame["method"] = path.parent.name, path.stem
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def kinds_of(data: pd.DataFrame, dataset: str) -> list[str]:
    """The defect kinds a dataset's block is split by: SkullBreak's (or the SkullBreak-like set's) five, in
    the order met; none for one kind (SkullFix) or a generalisation set (its locations are one experiment)."""
    if dataset.endswith(GENERALISATION_SUFFIX) or "defect_type" not in data:
        return []
    kinds = [k for k in dict.fromkeys(data.loc[data["dataset"] == dataset, "defect_type"]) if isinstance(k, str) and k]
    return kinds if len(kinds) > 1 else []


def _kind_blocks(data: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """``(dataset, kind, its rows)`` for every kind of every dataset split by kind (:func:`kinds_of`)."""
    return [(dataset, kind, data[(data["dataset"] == dataset) & (data["defect_type"] == kind)])
            for dataset in dict.fromkeys(data["dataset"]) for kind in kinds_of(data, dataset)]


def summarise(csv_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Mean and median of each metric per dataset and method, with case and failure counts; for a dataset
    of several defect kinds (:func:`kinds_of`) also per kind (``defect_type``; empty on the overall rows).

    Failed cases (empty implants) keep DSC = BDSC = 0 in the statistics; their HD95 is
    undefined and left out of the HD95 statistics, which the ``failed`` column makes visible.
    """
    data = _load_metrics(csv_paths)
    rows = []
    groups = [(dataset, "", method, group) for (dataset, method), group in data.groupby(["dataset", "method"], sort=False)]
    groups += [(dataset, kind, method, group) for dataset, kind, part in _kind_blocks(data)
               for method, group in part.groupby("method", sort=False)]
    for dataset, kind, method, group in groups:
        row: dict[str, Any] = {"dataset": dataset, "defect_type": kind, "method": method, "cases": len(group),
                               "failed": int(group["empty_prediction"].astype(bool).sum())}
        if "scored_on" in group:  # which cases: the test folder, or held-out training skulls
            row["scored_on"] = "; ".join(dict.fromkeys(v for v in group["scored_on"] if isinstance(v, str) and v))
        for metric in METRICS:
            values = group[metric].astype(float)
            row[f"{metric}_mean"] = float(values.mean()) if values.notna().any() else float("nan")
            row[f"{metric}_median"] = float(values.median()) if values.notna().any() else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def read_paper_table(paper_csv: str | Path) -> pd.DataFrame:
    """The published Table I: one row per dataset and method, ``paper_<metric>_<mean|median>`` columns.

    Lines starting with ``#`` are comments (the citation). A missing file or column is an error
    naming the file, so a table never silently loses the paper's values.
    """
    path = Path(paper_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: published Table I not found")
    paper = pd.read_csv(path, comment="#")
    columns = [f"{m}_{s}" for m in METRICS for s in ("mean", "median")]
    missing = [c for c in ["dataset", "method", *columns] if c not in paper.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    if paper.duplicated(["dataset", "method"]).any():
        raise ValueError(f"{path}: a dataset and method appear more than once")
    return paper[["dataset", "method", *columns]].rename(columns={c: f"paper_{c}" for c in columns})


def dataset_label(dataset: str) -> str:
    """A dataset's name in tables and figures; ``<source>_generalisation`` names its derived dataset."""
    if dataset.endswith(GENERALISATION_SUFFIX):
        source = dataset[: -len(GENERALISATION_SUFFIX)]
        return f"{DATASET_LABELS.get(source, source)}, generalisation (new defects on its test skulls)"
    return DATASET_LABELS.get(dataset, dataset)


def write_table1(csv_paths: Sequence[str | Path], out_csv: str | Path, out_md: str | Path,
                 paper_csv: str | Path | None = None, paired_csv: str | Path | None = None) -> pd.DataFrame:
    """Table I as CSV and Markdown, laid out like the paper (one block per dataset).

    With ``paper_csv`` every method's published mean and median of every metric stand beside
    ours (``paper_*`` columns); a dataset the paper does not have (a generalisation set) gets none.
    With ``paired_csv`` the MAE (D)'s paired differences against every other method
    (:func:`paired_bootstrap`) are written there and follow the table in the Markdown.
    """
    table = summarise(csv_paths)
    paper = read_paper_table(paper_csv) if paper_csv is not None else None
    if paper is not None:
        alike = [paper[paper["dataset"] == source].assign(dataset=made) for made, source in PAPER_EQUIVALENT.items()]
        table = table.merge(pd.concat([paper, *alike], ignore_index=True), on=["dataset", "method"], how="left")
        paper_columns = [c for c in table.columns if c.startswith("paper_")]
        table.loc[table["defect_type"] != "", paper_columns] = float("nan")  # the paper gives no per-kind values
    table.to_csv(out_csv, index=False, float_format="%.4f")
    lines = ["# Table I: defect reconstruction on the test sets", "",
             "Mean / median per method. `paper` columns: the published Table I of Wodzinski, Hemmerling, "
             "Daniol (2024), mean / median.", ""]
    for dataset, block in table.groupby("dataset", sort=False):
        lines += [f"## {dataset_label(dataset)}", ""]
        notes = [n for n in dict.fromkeys(block.get("scored_on", ())) if isinstance(n, str) and n]
        if notes:
            lines += [f"Scored on {'; '.join(notes)}.", ""]
        source = PAPER_EQUIVALENT.get(dataset, dataset)
        with_paper = paper is not None and (paper["dataset"] == source).any()
        if with_paper and source != dataset:
            lines += [f"The `paper` columns are the published {dataset_label(source)} values.", ""]
        lines += _table_lines(block[block["defect_type"] == ""], with_paper)
        if paper is not None and not with_paper:
            lines += ["", "The paper has no such experiment: no published values."]
        for kind, part in block[block["defect_type"] != ""].groupby("defect_type", sort=False):
            lines += ["", f"### {dataset_label(dataset)}: {kind}", ""] + _table_lines(part, False)
        lines.append("")
    if paired_csv is not None:
        comparisons = [paired_bootstrap([p for p in csv_paths if not _second_stage(Path(p).stem)])]
        comparisons += refined_comparisons(csv_paths)
        comparisons = [c for c in comparisons if not c.empty]
        paired = pd.concat(comparisons, ignore_index=True) if comparisons else pd.DataFrame()
        paired.to_csv(paired_csv, index=False, float_format="%.4f")
        for part in comparisons:
            lines += paired_markdown(part)
    Path(out_md).write_text("\n".join(lines))
    return table


def write_rows_table1(rows: dict[str, list[dict[str, Any]]], out: str | Path, dataset: str) -> Path:
    """Per-case rows by method (a benchmark's) as ``out/metrics/<dataset>/<method>.csv`` and Table I with paired
    intervals beside them (``out/table1.md``, ``table1.csv``, ``table1_paired.csv``); returns the Markdown's path."""
    out = Path(out)
    folder = out / "metrics" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for method, table in rows.items():
        pd.DataFrame(table).to_csv(folder / f"{method}.csv", index=False)
        paths.append(folder / f"{method}.csv")
    write_table1(paths, out / "table1.csv", out / "table1.md", paired_csv=out / "table1_paired.csv")
    return out / "table1.md"


def _table_lines(block: pd.DataFrame, with_paper: bool) -> list[str]:
    """One Markdown table of a block of :func:`summarise`'s rows (with the paper's columns beside)."""
    header = ["Method", "Cases", "Failed"]
    for m in METRICS:
        header += [f"{METRIC_LABELS[m]} mean / median"] + ([f"{METRIC_LABELS[m]} paper mean / median"] if with_paper else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in block.itertuples():
        cells = [method_label(row.method), str(row.cases), str(row.failed)]
        for m in METRICS:
            cells.append(f"{_fmt(getattr(row, f'{m}_mean'))} / {_fmt(getattr(row, f'{m}_median'))}")
            if with_paper:
                cells.append(f"{_fmt(getattr(row, f'paper_{m}_mean'))} / {_fmt(getattr(row, f'paper_{m}_median'))}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def paired_bootstrap(csv_paths: Sequence[str | Path], reference: str = "mae_d", metrics: Sequence[str] = ("dsc", "hd95"),
                     n_boot: int = 10_000, seed: int = 0) -> pd.DataFrame:
    """``reference`` minus every other method, per dataset and metric: the mean of the per-case
    differences over the cases both scored, with a paired bootstrap 95 % interval (cases drawn
    with replacement, ``n_boot`` times; percentile interval). A case without a value for either
    method (HD95 of an empty implant) is left out and counted in ``cases_left_out``.
    """
    data = _load_metrics(csv_paths)
    key = ["case", "defect_type"] if "defect_type" in data else ["case"]
    rows = []
    units = [(dataset, "", block) for dataset, block in data.groupby("dataset", sort=False)] + _kind_blocks(data)
    for dataset, kind, block in units:
        ref = block[block["method"] == reference].set_index(key)
        if ref.empty:
            continue
        for method, other in block[block["method"] != reference].groupby("method", sort=False):
            other = other.set_index(key)
            common = ref.index.intersection(other.index)
            for metric in metrics:
                diff = ref.loc[common, metric].astype(float) - other.loc[common, metric].astype(float)
                values = diff.dropna().to_numpy()
                row = {"dataset": dataset, "defect_type": kind, "reference": reference, "method": method, "metric": metric,
                       "cases": len(values), "cases_left_out": int(diff.isna().sum()), "resamplings": n_boot,
                       "mean_difference": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
                if len(values):
                    rng = np.random.default_rng(seed)  # the same draws for every comparison of equal size
                    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
                    row.update(mean_difference=float(values.mean()),
                               ci_low=float(np.percentile(means, 2.5)), ci_high=float(np.percentile(means, 97.5)))
                rows.append(row)
    return pd.DataFrame(rows)


def refined_comparisons(csv_paths: Sequence[str | Path]) -> list[pd.DataFrame]:
    """With a second stage in the run, per kind of stage (:data:`SECOND_STAGES`): MAE (D) with it against every
    method with it, then each method's row with it against its single-stage row (:func:`paired_bootstrap`, one
    frame per reference)."""
    paths = [Path(p) for p in csv_paths]
    out = []
    for suffix in SECOND_STAGES:
        staged = [p for p in paths if p.stem.endswith(suffix)]
        if any(p.stem == f"mae_d{suffix}" for p in staged):
            out.append(paired_bootstrap(staged, reference=f"mae_d{suffix}"))
        single = {p: p.with_name(p.stem.removesuffix(suffix) + p.suffix) for p in staged}
        own = [paired_bootstrap([path, first], reference=path.stem) for path, first in single.items() if first in paths]
        if own:
            out.append(pd.concat(own, ignore_index=True))
    return out


def paired_markdown(paired: pd.DataFrame) -> list[str]:
    """The paired differences as Markdown blocks, one per dataset and one per defect kind of a dataset that has
    several (for table1.md)."""
    if paired.empty:
        return []
    ref = method_label(paired["reference"].iloc[0])
    resamplings = int(paired["resamplings"].iloc[0])  # paired_bootstrap's n_boot, on every row
    own_stage = paired["reference"].nunique() > 1  # each method's second stage against its own single stage
    if own_stage:
        ref = "the second stage"
        lines = ["# Each method's second stage against its single stage: paired differences on the same cases", ""]
    else:
        lines = [f"# {ref} against each method: paired differences on the same cases", ""]
    lines += [f"Mean of the per-case differences ({ref} minus {'the single stage' if own_stage else 'the method'}) "
              f"with a paired bootstrap 95 % interval ({resamplings:,} resamplings of the cases). DSC: above 0 "
              f"favours {ref}; HD95: below 0 favours {ref}.", ""]
    for (dataset, kind), block in paired.groupby(["dataset", "defect_type"], sort=False):
        title = f"{dataset_label(dataset)}: {kind}" if kind else dataset_label(dataset)
        lines += [f"{'###' if kind else '##'} {title}", "", "| Method | Cases | " +
                  " | ".join(f"{METRIC_LABELS[m]} difference [95 % CI]" for m in block["metric"].unique()) + " |",
                  "|" + "---|" * (2 + block["metric"].nunique())]
        for method, rows in block.groupby("reference" if own_stage else "method", sort=False):
            cells = [method_label(method), str(int(rows["cases"].max()))]
            for r in rows.itertuples():
                cells.append(f"{r.mean_difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                             if np.isfinite(r.mean_difference) else "n/a")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def plot_figure4(csv_paths: Sequence[str | Path], out_png: str | Path) -> None:
    """Box plots of DSC, boundary DSC and HD95 per dataset (rows) and method (boxes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = _load_metrics(csv_paths)
    datasets = list(dict.fromkeys(data["dataset"]))
    methods = list(dict.fromkeys(data["method"]))
    fig, axes = plt.subplots(len(datasets), 3, figsize=(15, 4.2 * len(datasets)), squeeze=False)
    for r, dataset in enumerate(datasets):
        for c, metric in enumerate(METRICS):
            ax = axes[r, c]
            groups = [data[(data.dataset == dataset) & (data.method == m)][metric].astype(float).dropna()
                      for m in methods]
            ax.boxplot([g.to_numpy() for g in groups], showfliers=True)
            ax.set_xticks(range(1, len(methods) + 1), [method_label(m) for m in methods],
                          rotation=30, ha="right")
            ax.set_title(f"{dataset_label(dataset)}: {METRIC_LABELS[metric]}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            if metric != "hd95":
                ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_figure3(results_dir: str | Path, datasets: Sequence[str], methods: Sequence[str], out_png: str | Path) -> None:
    """One test case per dataset shown for every method: orthogonal maximum projections.

    Grey: the defective skull; green: ground-truth implant; red: the method's implant (yellow
    where they agree). The case is the first test case of the dataset, so every method is
    compared on the same skull.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results_dir = Path(results_dir)
    columns = ["ground truth", *methods]
    fig, axes = plt.subplots(len(datasets) * 2, len(columns), figsize=(2.3 * len(columns), 4.6 * len(datasets)),
                             squeeze=False)
    for d, dataset in enumerate(datasets):
        cases = pd.read_csv(results_dir / "preprocessed" / dataset / "test" / "cases.tsv", sep="\t", dtype=str,
                            keep_default_na=False)
        case = cases.iloc[0]
        defective = read_volume(case.defective)
        gt = read_volume(case.implant).array.astype(bool) if case.implant else np.zeros(defective.shape, bool)
        for c, column in enumerate(columns):
            pred = gt if column == "ground truth" else read_volume(
                results_dir / "implants" / dataset / column / f"{case['name']}.nrrd").array.astype(bool)
            for v, axis in enumerate((2, 0)):  # top view and side view
                ax = axes[2 * d + v, c]
                ax.imshow(_overlay(defective.array.astype(bool), gt, pred, axis), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if v == 0:
                    ax.set_title(method_label(column), fontsize=9)
            axes[2 * d, 0].set_ylabel(f"{dataset_label(dataset)} {case['name']}\ntop", fontsize=8)
            axes[2 * d + 1, 0].set_ylabel("side", fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def _overlay(skull: np.ndarray, gt: np.ndarray, pred: np.ndarray, axis: int) -> np.ndarray:
    proj = [np.rot90(a.any(axis=axis)) for a in (skull, gt, pred)]
    img = np.zeros((*proj[0].shape, 3))
    img[proj[0]] = 0.55
    img[proj[1]] = (0.1, 0.75, 0.1)
    img[proj[2]] = (0.9, 0.1, 0.1)
    img[proj[1] & proj[2]] = (0.95, 0.85, 0.1)
    return img


def plot_masking_examples(train_dirs: Sequence[str | Path], masking: dict[str, Any], out_png: str | Path,
                          n_skulls: int = 4, seed: int = 0) -> None:
    """What the MAE is trained on: healthy training skulls with deformed (D) and sharp (ND) masks."""
    from skullrecon.masking import MaskConfig, masking_examples
    from skullrecon.preprocess import load_case

    files = sorted(f for d in train_dirs for f in (Path(d) / "healthy").glob("*.npz"))
    if not files:
        raise FileNotFoundError(f"no healthy training skulls under {list(map(str, train_dirs))}")
    step = max(1, len(files) // n_skulls)
    chosen = files[::step][:n_skulls]
    loaded = [load_case(f) for f in chosen]
    skulls = [arrays["complete"].astype(bool) for arrays, _ in loaded]
    spacing = loaded[0][1].grid_spacing
    cfg_d = MaskConfig.from_dict({**masking, "deform": True})
    cfg_nd = MaskConfig.from_dict({**masking, "deform": False})
    masking_examples(skulls, spacing, cfg_d, cfg_nd, out_png, seed=seed)


def plot_training_curves(csv_paths: Sequence[str | Path], out_png: str | Path) -> list[str]:
    """Training loss and validation DSC per epoch, one line per trained network (``training/*.csv``).

    An MAE's log also has ``val_restored_dsc`` (DSC of the bone it added vs the bone removed from
    the validation skulls): the score that says how well it fills defects, drawn dotted beside its
    whole-skull DSC, which copying the input already makes high. Returns the DSC panel's labels.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not csv_paths:
        raise ValueError("no training logs given")
    fig, (ax_loss, ax_dsc) = plt.subplots(1, 2, figsize=(13, 4.5))
    for path in csv_paths:
        history = pd.read_csv(path)
        missing = {"epoch", "train_loss", "val_dsc"} - set(history.columns)
        if missing:
            raise ValueError(f"{path}: not a training log (no {sorted(missing)} columns)")
        name = Path(path).stem
        method, _, dataset = name.partition("_") if not is_mae(name) else (name, "", "")
        label = method_label(method) + (f" ({DATASET_LABELS.get(dataset, dataset)})" if dataset else "")
        style = "-" if is_mae(name) else "--"
        ax_loss.plot(history["epoch"], history["train_loss"], style, label=label)
        line, = ax_dsc.plot(history["epoch"], history["val_dsc"], style, marker="." if len(history) < 20 else None,
                            label=label)
        if is_mae(name) and "val_restored_dsc" in history.columns:
            ax_dsc.plot(history["epoch"], history["val_restored_dsc"], ":", color=line.get_color(),
                        label=f"{label}: restored bone")
    ax_loss.set(xlabel="epoch", ylabel="training loss (soft Dice)", title="Training loss")
    ax_dsc.set(xlabel="epoch", ylabel="validation DSC", title="Validation DSC (dotted: MAE, restored bone only)",
               ylim=(-0.02, 1.02))
    for ax in (ax_loss, ax_dsc):
        ax.grid(alpha=0.3)
    ax_dsc.legend(fontsize=7, loc="lower right", ncol=2)
    labels = [line.get_label() for line in ax_dsc.get_lines()]
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return labels


def write_provenance(config: dict[str, Any], out_yaml: str | Path, out_env: str | Path | None = None,
                     source_dir: str | Path | None = None) -> None:
    """The resolved config of a run, and ``env.json`` (versions, git commit of ``source_dir``, host)."""
    import yaml

    out_yaml = Path(out_yaml)
    out_yaml.parent.mkdir(parents=True, exist_ok=True)
    out_yaml.write_text(yaml.safe_dump(json.loads(json.dumps(config)), sort_keys=False))
    env = {"python": platform.python_version(), "host": platform.node(), "platform": platform.platform()}
    from importlib.metadata import PackageNotFoundError, version

    for pkg in ("skullrecon", "torch", "monai", "numpy", "snakemake", "snakemake-executor-plugin-slurm"):
        try:
            env[pkg] = version(pkg)
        except PackageNotFoundError:
            env[pkg] = None
    try:
        git = ["git", "-C", str(source_dir or ".")]
        env["git_commit"] = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True,
                                           check=True).stdout.strip()
        env["git_dirty"] = bool(subprocess.run([*git, "status", "--porcelain", "--untracked-files=no"],
                                               capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        env["git_commit"] = None
    Path(out_env or out_yaml.parent / "env.json").write_text(json.dumps(env, indent=2))
