from skullrecon.runlog import to_file
from skullrecon.synthetic import generate_dataset

spec = snakemake.params.spec
with to_file(snakemake.log[0]):
    summary = generate_dataset(
        snakemake.output[0],
        dataset=snakemake.wildcards.dataset,
        n_train=spec["n_train"],
        n_test=spec["n_test"],
        shape=tuple(spec["shape"]),
        spacing=tuple(spec["spacing"]),
        seed=spec["seed"],
        defect_types=snakemake.params.types,
    )
    print(summary)
