from skullrecon.datasets import Layout
from skullrecon.preprocess import preprocess_split
from skullrecon.runlog import to_file

p = snakemake.params
with to_file(snakemake.log[0]):
    summary = preprocess_split(
        root=snakemake.input[0],
        layout=Layout.from_dict(p.layout),
        split=snakemake.wildcards.split,
        out_dir=snakemake.output[0],
        grid=p.grid,
        margin=p.margin,
    )
    print(summary)
