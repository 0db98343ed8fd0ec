from skullrecon.download import fetch_dataset
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    fetch_dataset(snakemake.wildcards.dataset, snakemake.params.dest_root)
