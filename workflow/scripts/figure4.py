from skullrecon.report import plot_figure4
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    plot_figure4(snakemake.input, snakemake.output[0])
