from skullrecon.report import plot_training_curves
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    plot_training_curves(list(snakemake.input), snakemake.output[0])
