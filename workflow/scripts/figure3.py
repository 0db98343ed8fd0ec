from skullrecon.report import plot_figure3
from skullrecon.runlog import to_file

p = snakemake.params
with to_file(snakemake.log[0]):
    plot_figure3(p.results, p.datasets, p.methods, snakemake.output[0])
