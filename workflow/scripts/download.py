import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # the library, also inside --sdm conda envs
from skullrecon.download import fetch_dataset
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    fetch_dataset(snakemake.wildcards.dataset, snakemake.params.dest_root)
