from skullrecon.report import write_provenance
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    write_provenance(snakemake.params.config, snakemake.output.config, snakemake.output.env,
                     source_dir=snakemake.params.source_dir)
