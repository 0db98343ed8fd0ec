import pandas as pd

from skullrecon.runlog import to_file
from skullrecon.shape_model import build_shape_model

with to_file(snakemake.log[0]):
    cases = pd.read_csv(f"{snakemake.input.cases}/cases.tsv", sep="\t", dtype=str, keep_default_na=False)
    skulls = sorted({c for c in cases["complete"] if c})  # a SkullBreak skull's five cases share one
    build_shape_model(skulls).save(snakemake.output[0])
