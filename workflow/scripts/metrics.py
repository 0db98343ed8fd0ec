from skullrecon.report import evaluate_method
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    evaluate_method(
        implants_dir=snakemake.input.implants,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_csv=snakemake.output[0],
        margin_mm=snakemake.params.margin_mm,
    )
