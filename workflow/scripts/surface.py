from skullrecon.runlog import to_file
from skullrecon.surfaces import SurfaceConfig, surface_cases

with to_file(snakemake.log[0]):
    surface_cases(
        implants_dir=snakemake.input.implants,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_dir=snakemake.output[0],
        cfg=SurfaceConfig.from_dict(snakemake.params.surface),
    )
