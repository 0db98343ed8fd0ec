import sys

sys.path.insert(0, f"{snakemake.scriptdir}/../../src")  # the library, also inside --sdm conda envs
from skullrecon.report import write_provenance
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    write_provenance(snakemake.params.config, snakemake.output[0])
