from skullrecon.release import network_from_release
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    print(network_from_release(snakemake.params.name, snakemake.output.model, snakemake.config))
