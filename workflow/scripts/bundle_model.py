from skullrecon.models import bundle_model
from skullrecon.runlog import to_file

with to_file(snakemake.log[0]):
    print(bundle_model(snakemake.input[0], snakemake.params.postprocess, snakemake.output[0]))
