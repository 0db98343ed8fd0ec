from skullrecon.datasets import Layout
from skullrecon.defects import derive_dataset
from skullrecon.runlog import to_file

p = snakemake.params
with to_file(snakemake.log[0]):
    derive_dataset(
        snakemake.input[0],
        Layout.from_dict(p.layout),
        snakemake.output[0],
        locations=p.spec["locations"],
        shapes=p.spec["shapes"],
        size_mm=tuple(p.spec["size_mm"]),
        seed=p.spec["seed"],
        per_skull=p.spec.get("per_skull"),
        max_skulls=p.spec.get("max_skulls"),
    )
