from skullrecon.runlog import to_file
from skullrecon.surfaces import SurfaceConfig, surface_cases

with to_file(snakemake.log[0]):
    shape_model = list(snakemake.input.shape_model)  # the shape model rule's file; none: the harmonic fill alone
    surface_cases(
        implants_dir=snakemake.input.implants,
        cases_tsv=f"{snakemake.input.cases}/cases.tsv",
        out_dir=snakemake.output[0],
        cfg=SurfaceConfig.from_dict({**snakemake.params.surface, "shape_model": (shape_model or [None])[0]}),
    )
