"""Per-case metrics, Table I and Figure 4: failures are counted, never dropped or skipped."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from skullrecon.io import VolumeError, write_volume
from skullrecon.report import evaluate_method, plot_figure4, summarise, write_table1

from conftest import shell

SPACING = (1.5, 1.5, 2.0)


def _dsc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.fixture
def test_set(tmp_path):
    """Three test cases (a shell with a cap removed, the cap shifted per case) and cases.tsv."""
    skull = shell((40, 40, 40), (17, 15, 14), 3)
    rows, truths = [], {}
    for i, z0 in enumerate((26, 28, 30)):
        implant = skull.copy()
        implant[:, :, :z0] = False
        defective = skull & ~implant
        name = f"{i:03d}"
        for kind, array in (("defective", defective), ("implant", implant)):
            write_volume(tmp_path / "data" / kind / f"{name}.nrrd", array.astype(np.uint8), spacing=SPACING)
        rows.append({"name": name, "case_id": name, "defect_type": "",
                     "defective": str(tmp_path / "data" / "defective" / f"{name}.nrrd"),
                     "implant": str(tmp_path / "data" / "implant" / f"{name}.nrrd"),
                     "complete": ""})
        truths[name] = implant
    pd.DataFrame(rows).to_csv(tmp_path / "cases.tsv", sep="\t", index=False)
    return tmp_path, truths


def _predict(folder: Path, truths: dict[str, np.ndarray], empty: set[str]) -> dict[str, np.ndarray]:
    """Predictions: the truth shifted by one voxel, or nothing for the cases in ``empty``."""
    preds = {}
    for name, gt in truths.items():
        pred = np.zeros_like(gt) if name in empty else np.roll(gt, 1, axis=0)
        write_volume(folder / f"{name}.nrrd", pred.astype(np.uint8), spacing=SPACING)
        preds[name] = pred
    return preds


def _f(text: str) -> float:
    """A CSV number; pandas writes NaN as an empty field."""
    return float(text) if text != "" else float("nan")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_empty_prediction_is_a_counted_failure(test_set):
    root, truths = test_set
    preds = {
        "unet": _predict(root / "implants" / "unet", truths, empty={"001"}),
        "mae_d": _predict(root / "implants" / "mae_d", truths, empty=set()),
    }
    csvs = []
    for method in preds:
        out = root / "metrics" / "skullfix" / f"{method}.csv"
        evaluate_method(root / "implants" / method, root / "cases.tsv", out)
        csvs.append(out)

    rows = {r["case"]: r for r in _read_csv(root / "metrics" / "skullfix" / "unet.csv")}
    assert list(rows) == ["000", "001", "002"]
    assert rows["001"]["empty_prediction"] == "True"
    assert float(rows["001"]["dsc"]) == 0.0 and float(rows["001"]["bdsc"]) == 0.0
    assert rows["001"]["hd95"] == ""  # NaN
    for name in ("000", "002"):
        assert rows[name]["empty_prediction"] == "False"
        assert float(rows[name]["dsc"]) == pytest.approx(_dsc(preds["unet"][name], truths[name]), abs=1e-9)
        assert float(rows[name]["hd95"]) > 0

    table = write_table1(csvs, root / "table1.csv", root / "table1.md")
    written = {r["method"]: r for r in _read_csv(root / "table1.csv")}
    assert set(written) == {"unet", "mae_d"}
    for method, path in zip(preds, csvs):
        per_case = _read_csv(path)
        failed = sum(r["empty_prediction"] == "True" for r in per_case)
        assert int(written[method]["cases"]) == 3 and int(written[method]["failed"]) == failed
        for metric in ("dsc", "bdsc", "hd95"):
            values = [_f(r[metric]) for r in per_case]
            finite = [v for v in values if not math.isnan(v)]
            # DSC and BDSC keep the failure's 0; HD95 is undefined there and left out
            expected = values if metric != "hd95" else finite
            assert len(expected) == (3 if metric != "hd95" else 3 - failed)
            assert float(written[method][f"{metric}_mean"]) == pytest.approx(statistics.fmean(expected), abs=1e-4)
            assert float(written[method][f"{metric}_median"]) == pytest.approx(statistics.median(expected), abs=1e-4)
    assert int(written["unet"]["failed"]) == 1 and int(written["mae_d"]["failed"]) == 0
    # the failure pulls the mean down: unet's mean DSC is (a + 0 + c) / 3, not (a + c) / 2
    unet_dsc = [float(rows[n]["dsc"]) for n in ("000", "002")]
    assert float(written["unet"]["dsc_mean"]) == pytest.approx(sum(unet_dsc) / 3, abs=1e-4)
    assert dict(zip(table["method"], table["failed"])) == {"unet": 1, "mae_d": 0}

    md = (root / "table1.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Method"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    for label, method in (("UNet", "unet"), ("MAE (D)", "mae_d")):
        line = next(line for line in md.splitlines() if line.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[cols.index("Cases")] == "3"
        assert cells[cols.index("Failed")] == written[method]["failed"]
        assert cells[cols.index("DSC mean / median")].startswith(f"{float(written[method]['dsc_mean']):.3f} / ")
    assert "## SkullFix" in md

    png = root / "figure4.png"
    plot_figure4(csvs, png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_summary_reads_only_the_per_case_files(tmp_path):
    """Table I is a function of the CSVs: editing a per-case value changes the table."""
    path = tmp_path / "skullbreak" / "unet.csv"
    path.parent.mkdir()
    pd.DataFrame({"case": ["a", "b"], "dsc": [0.5, 0.9], "bdsc": [0.4, 0.8], "hd95": [3.0, 5.0],
                  "empty_prediction": [False, False]}).to_csv(path, index=False)
    first = summarise([path]).iloc[0]
    assert (first.dataset, first.method, first.cases, first.failed) == ("skullbreak", "unet", 2, 0)
    assert first.dsc_mean == pytest.approx(0.7)
    frame = pd.read_csv(path)
    frame.loc[1, ["dsc", "bdsc", "hd95", "empty_prediction"]] = [0.0, 0.0, float("nan"), True]
    frame.to_csv(path, index=False)
    second = summarise([path]).iloc[0]
    assert second.failed == 1 and second.dsc_mean == pytest.approx(0.25) and second.hd95_mean == pytest.approx(3.0)


def test_missing_implant_file_is_an_error_naming_it(test_set):
    root, truths = test_set
    _predict(root / "implants" / "unet", truths, empty=set())
    missing = root / "implants" / "unet" / "002.nrrd"
    missing.unlink()
    out = root / "metrics" / "skullfix" / "unet.csv"
    with pytest.raises(VolumeError, match="file not found") as err:
        evaluate_method(root / "implants" / "unet", root / "cases.tsv", out)
    assert str(missing) in str(err.value)
    assert not out.exists()  # no table with the case silently left out


def test_case_without_ground_truth_is_an_error(test_set):
    root, truths = test_set
    _predict(root / "implants" / "unet", truths, empty=set())
    cases = pd.read_csv(root / "cases.tsv", sep="\t", dtype=str, keep_default_na=False)
    cases.loc[1, "implant"] = ""
    cases.to_csv(root / "cases.tsv", sep="\t", index=False)
    with pytest.raises(FileNotFoundError, match="no ground-truth implant for test case 001") as err:
        evaluate_method(root / "implants" / "unet", root / "cases.tsv", root / "out.csv")
    assert cases.loc[1, "defective"] in str(err.value)


PAPER_CSV = Path(__file__).resolve().parents[1] / "workflow" / "report" / "paper_table1.csv"
METRIC_NAMES = {"dsc": "DSC", "bdsc": "BDSC", "hd95": "HD95 [mm]"}


def _published() -> list[dict[str, str]]:
    """The project's copy of the paper's Table I, read without the library (comment lines skipped)."""
    with open(PAPER_CSV, newline="") as fh:
        return list(csv.DictReader(line for line in fh if not line.startswith("#")))


def _md_cells(md: str, heading: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by method label) of one dataset's block of table1.md."""
    block = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in block.splitlines() if line.startswith("| ")]
    return rows[0], {r[0]: r for r in rows[1:]}


def test_paper_copy_has_every_published_value():
    """84 numbers: mean and median of three metrics, 7 methods, 2 datasets; citation in the header."""
    assert PAPER_CSV.read_text().startswith("# Table I of M. Wodzinski, D. Hemmerling, M. Daniol (2024)")
    rows = _published()
    assert {(r["dataset"], r["method"]) for r in rows} == {
        (d, m) for d in ("skullbreak", "skullfix")
        for m in ("mae_d", "mae_nd", "unet", "unetr", "swinunetr", "attentionunet", "segresnet")}
    values = [float(r[f"{m}_{s}"]) for r in rows for m in METRIC_NAMES for s in ("mean", "median")]
    assert len(values) == 84 and all(v > 0 for v in values)
    shared = Path(__file__).resolve().parents[2] / "shared" / "notes" / "paper-table1.csv"
    if shared.exists():  # the lead's transcription of the paper, outside the repository
        with open(shared, newline="") as fh:
            theirs = list(csv.DictReader(line for line in fh if not line.startswith("#")))
        assert theirs == rows


def test_table1_carries_every_published_value_beside_ours(tmp_path):
    rows = _published()
    rng = np.random.default_rng(0)
    csvs = []
    for dataset in ("skullbreak", "skullfix", "skullfix_generalisation"):
        for method in dict.fromkeys(r["method"] for r in rows):
            path = tmp_path / dataset / f"{method}.csv"
            path.parent.mkdir(exist_ok=True)
            pd.DataFrame({"case": ["a", "b", "c"], "dsc": rng.uniform(0, 1, 3), "bdsc": rng.uniform(0, 1, 3),
                          "hd95": rng.uniform(1, 9, 3), "empty_prediction": False}).to_csv(path, index=False)
            csvs.append(path)
    write_table1(csvs, tmp_path / "table1.csv", tmp_path / "table1.md", paper_csv=PAPER_CSV)

    written = {(r["dataset"], r["method"]): r for r in _read_csv(tmp_path / "table1.csv")}
    md = (tmp_path / "table1.md").read_text()
    labels = {"mae_d": "MAE (D)", "mae_nd": "MAE (ND)", "unet": "UNet", "unetr": "UNETR",
              "swinunetr": "SwinUNETR", "attentionunet": "AttentionUnet", "segresnet": "SegResNet"}
    for r in rows:
        ours = written[(r["dataset"], r["method"])]
        header, cells = _md_cells(md, {"skullbreak": "SkullBreak", "skullfix": "SkullFix"}[r["dataset"]])
        line = cells[labels[r["method"]]]
        for metric, label in METRIC_NAMES.items():
            for stat in ("mean", "median"):
                assert float(ours[f"paper_{metric}_{stat}"]) == pytest.approx(float(r[f"{metric}_{stat}"]))
            assert line[header.index(f"{label} paper mean / median")] == (
                f"{float(r[f'{metric}_mean']):.3f} / {float(r[f'{metric}_median']):.3f}")
            # ours beside it, from the per-case file
            values = pd.read_csv(tmp_path / r["dataset"] / f"{r['method']}.csv")[metric]
            assert line[header.index(f"{label} mean / median")] == f"{values.mean():.3f} / {values.median():.3f}"
    # the generalisation set has no published counterpart: its rows carry none
    header, cells = _md_cells(md, "SkullFix, generalisation (new defects on its test skulls)")
    assert len(cells) == 7 and not any("paper" in h for h in header)
    assert all(r["paper_dsc_mean"] == "" for k, r in written.items() if k[0] == "skullfix_generalisation")


def test_paper_table_must_be_complete(tmp_path):
    path = tmp_path / "unet.csv"
    pd.DataFrame({"case": ["a"], "dsc": [0.5], "bdsc": [0.4], "hd95": [3.0], "empty_prediction": [False]}).to_csv(
        path, index=False)
    with pytest.raises(FileNotFoundError, match="published Table I not found"):
        write_table1([path], tmp_path / "t.csv", tmp_path / "t.md", paper_csv=tmp_path / "absent.csv")
    bad = tmp_path / "paper.csv"
    bad.write_text("# citation\ndataset,method,dsc_mean,dsc_median\nskullfix,unet,0.8,0.8\n")
    with pytest.raises(ValueError, match=r"paper.csv: missing column\(s\) \['bdsc_mean'"):
        write_table1([path], tmp_path / "t.csv", tmp_path / "t.md", paper_csv=bad)


def test_table1_says_which_cases_were_scored(test_set):
    """A recorded hold-out (written by preprocess_split next to cases.tsv) is named in Table I."""
    root, truths = test_set
    (root / "scored_on.txt").write_text("held-out training skulls 080-099 (20 skulls) of 'training_set'\n")
    _predict(root / "implants" / "unet", truths, empty=set())
    out = root / "metrics" / "skullfix" / "unet.csv"
    evaluate_method(root / "implants" / "unet", root / "cases.tsv", out)
    table = write_table1([out], root / "table1.csv", root / "table1.md")
    assert table["scored_on"].tolist() == ["held-out training skulls 080-099 (20 skulls) of 'training_set'"]
    md = (root / "table1.md").read_text()
    assert "## SkullFix\n\nScored on held-out training skulls 080-099 (20 skulls) of 'training_set'." in md


def test_training_curves_show_the_maes_restored_bone_score(tmp_path):
    """The MAE's implant-quality score is drawn beside its whole-skull DSC; baselines and older logs
    (without the column) draw one DSC line each; a file that is not a training log is refused."""
    from skullrecon.report import plot_training_curves

    epochs = [1, 2, 3]
    pd.DataFrame({"epoch": epochs, "train_loss": [0.9, 0.7, 0.6], "val_dsc": [0.6, 0.7, 0.8],
                  "val_restored_dsc": [0.1, 0.2, 0.3]}).to_csv(tmp_path / "mae_d.csv", index=False)
    pd.DataFrame({"epoch": epochs, "train_loss": [0.9, 0.8, 0.7],
                  "val_dsc": [0.2, 0.3, 0.4]}).to_csv(tmp_path / "unet_skullfix.csv", index=False)
    labels = plot_training_curves([tmp_path / "mae_d.csv", tmp_path / "unet_skullfix.csv"], tmp_path / "c.png")
    assert len(labels) == 3 and sum("restored" in label for label in labels) == 1
    assert (tmp_path / "c.png").stat().st_size > 0
    pd.DataFrame({"epoch": epochs}).to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="other.csv"):
        plot_training_curves([tmp_path / "other.csv"], tmp_path / "d.png")


def test_an_implant_on_another_grid_is_refused_naming_it(test_set):
    """Same shape, other spacing: scored voxel by voxel it would look right; it is an error instead."""
    root, truths = test_set
    _predict(root / "implants" / "unet", truths, empty=set())
    shifted = root / "implants" / "unet" / "001.nrrd"
    write_volume(shifted, np.roll(truths["001"], 1, axis=0).astype(np.uint8), spacing=(2.0, 2.0, 2.0))
    out = root / "metrics" / "skullfix" / "unet.csv"
    with pytest.raises(VolumeError, match="grid mismatch") as err:
        evaluate_method(root / "implants" / "unet", root / "cases.tsv", out)
    assert str(shifted) in str(err.value) and not out.exists()


def test_paired_bootstrap_of_per_case_differences(tmp_path):
    from skullrecon.report import paired_bootstrap

    rng = np.random.default_rng(3)
    cases = [f"{i:03d}" for i in range(14)]
    base = rng.uniform(0.6, 0.9, len(cases))
    folder = tmp_path / "skullfix"
    folder.mkdir()
    for method, dsc, hd in (("mae_d", base + 0.05, np.full(14, 2.0)), ("unet", base, np.full(14, 3.0)),
                            ("same", base + 0.05, np.r_[np.full(13, 2.0), np.nan])):
        pd.DataFrame({"case": cases, "defect_type": "", "dsc": dsc, "bdsc": dsc, "hd95": hd,
                      "empty_prediction": False}).to_csv(folder / f"{method}.csv", index=False)
    paired = paired_bootstrap(sorted(folder.glob("*.csv"))).set_index(["method", "metric"])
    unet = paired.loc[("unet", "dsc")]
    assert unet["cases"] == 14 and unet["mean_difference"] == pytest.approx(0.05)
    assert unet["ci_low"] == pytest.approx(0.05) and unet["ci_high"] == pytest.approx(0.05)  # a constant gap
    assert paired.loc[("unet", "hd95"), "mean_difference"] == pytest.approx(-1.0)
    same = paired.loc[("same", "hd95")]
    assert same["cases"] == 13 and same["cases_left_out"] == 1 and same["mean_difference"] == 0
    # a noisy gap: the interval holds the mean and is reproducible
    noisy = base + rng.normal(0, 0.05, 14)
    pd.DataFrame({"case": cases, "defect_type": "", "dsc": noisy, "bdsc": noisy, "hd95": 1.0,
                  "empty_prediction": False}).to_csv(folder / "unet.csv", index=False)
    again = paired_bootstrap(sorted(folder.glob("*.csv"))).set_index(["method", "metric"]).loc[("unet", "dsc")]
    assert again["ci_low"] < again["mean_difference"] < again["ci_high"]
    assert again.equals(paired_bootstrap(sorted(folder.glob("*.csv"))).set_index(["method", "metric"]).loc[("unet", "dsc")])


def test_paired_markdown_states_the_resamplings_it_was_given(tmp_path):
    from skullrecon.report import paired_bootstrap, paired_markdown

    folder = tmp_path / "skullfix"
    folder.mkdir()
    for method, dsc in (("mae_d", 0.9), ("unet", 0.8)):
        pd.DataFrame({"case": ["000", "004"], "defect_type": "", "dsc": dsc, "bdsc": dsc, "hd95": 2.0,
                      "empty_prediction": False}).to_csv(folder / f"{method}.csv", index=False)
    text = "\n".join(paired_markdown(paired_bootstrap(sorted(folder.glob("*.csv")), n_boot=500)))
    assert "(500 resamplings" in text and "10,000" not in text


def test_skullbreaklike_block_per_kind_with_the_papers_skullbreak_values(tmp_path):
    """A dataset of several kinds gets a row per kind as well as overall (Table I and the paired intervals),
    computed from the per-case files; the SkullBreak-like block shows the paper's SkullBreak values beside its
    overall rows and none beside a kind (the paper gives none per kind)."""
    kinds = ["bilateral", "frontoorbital", "parietotemporal", "random_1", "random_2"]
    rng = np.random.default_rng(1)
    csvs = []
    for method in ("mae_d", "mae_nd", "segresnet"):
        path = tmp_path / "skullbreaklike" / f"{method}.csv"
        path.parent.mkdir(exist_ok=True)
        pd.DataFrame({"case": [f"{k}_{i:03d}" for k in kinds for i in range(4)],
                      "defect_type": [k for k in kinds for _ in range(4)], "dsc": rng.uniform(0, 1, 20),
                      "bdsc": rng.uniform(0, 1, 20), "hd95": rng.uniform(1, 9, 20),
                      "empty_prediction": False}).to_csv(path, index=False)
        csvs.append(path)
    table = write_table1(csvs, tmp_path / "t.csv", tmp_path / "t.md", paper_csv=PAPER_CSV, paired_csv=tmp_path / "p.csv")

    assert len(table) == 3 * (1 + len(kinds))
    per_case = pd.read_csv(csvs[2])
    row = table[(table["method"] == "segresnet") & (table["defect_type"] == "random_1")].iloc[0]
    assert row["dsc_mean"] == pytest.approx(per_case.loc[per_case["defect_type"] == "random_1", "dsc"].mean())
    overall = table[(table["method"] == "mae_d") & (table["defect_type"] == "")].iloc[0]
    assert overall["cases"] == 20 and overall["paper_dsc_mean"] == pytest.approx(0.863)  # the paper's SkullBreak
    assert table.loc[table["defect_type"] != "", "paper_dsc_mean"].isna().all()

    paired = pd.read_csv(tmp_path / "p.csv", keep_default_na=False)
    assert len(paired) == 2 * 2 * (1 + len(kinds))  # MAE (D) minus 2 methods, DSC and HD95, overall and per kind
    nd = paired[(paired["method"] == "mae_nd") & (paired["metric"] == "dsc") & (paired["defect_type"] == "bilateral")]
    ours = pd.read_csv(csvs[0]).set_index("case")["dsc"] - pd.read_csv(csvs[1]).set_index("case")["dsc"]
    assert float(nd["mean_difference"].iloc[0]) == pytest.approx(ours[[f"bilateral_{i:03d}" for i in range(4)]].mean(),
                                                                 abs=1e-4)
    assert int(nd["cases"].iloc[0]) == 4
    md = (tmp_path / "t.md").read_text()
    assert "published SkullBreak values" in md
    assert all(md.count(f"### SkullBreak-like (five kinds in real SkullFix skulls): {k}\n") == 2
               for k in kinds)  # its Table I block and its paired block
