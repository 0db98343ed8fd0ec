from skullrecon.report import plot_masking_examples
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    plot_masking_examples(list(snakemake.input), snakemake.params.masking, snakemake.output[0])
