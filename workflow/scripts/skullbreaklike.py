from skullrecon.datasets import Layout
from skullrecon.runlog import to_file
from skullrecon.skullbreaklike import generate_dataset

p = snakemake.params
with to_file(snakemake.log[0]):
    generate_dataset(
        snakemake.input[0],
        Layout.from_dict(p.layout),
        snakemake.output[0],
        kinds=p.spec["kinds"],
        seed=p.spec["seed"],
        max_skulls=p.spec.get("max_skulls"),
    )
