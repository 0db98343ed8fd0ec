from skullrecon.report import write_table1
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    write_table1(snakemake.input.metrics, snakemake.output.csv, snakemake.output.md, paper_csv=snakemake.input.paper,
                 paired_csv=snakemake.output.paired)
