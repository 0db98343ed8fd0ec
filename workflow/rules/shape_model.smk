# The shape model of healthy skulls (skullrecon.shape_model) for the surface stage, when the `surface` block asks
# for it (`shape_model: true`): built from the complete skulls of the dataset's training split (healthy skulls only,
# as the MAE learns from; no defect, no test skull), a rule of its own so that the surface stage's rows rerun
# without it.


rule shape_model:
    wildcard_constraints:
        dataset="|".join(DATASETS),
    input:
        cases=f"{RESULTS}/preprocessed/{{dataset}}/train",
    output:
        f"{RESULTS}/networks/shape_model_{{dataset}}.npz",
    log:
        f"{RESULTS}/logs/shape_model/{{dataset}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/shape_model/{{dataset}}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    conda:
        ENV
    script:
        "../scripts/shape_model.py"
