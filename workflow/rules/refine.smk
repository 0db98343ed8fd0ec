# The second stage (issue 37, skullrecon.refine): the MAE's healthy skulls at the fine grid, one network trained on
# them alone, and every first stage's stored predictions refined around what they fill. Rules of their own: adding
# or changing the second stage retrains no first stage; its rows (<method>_refined) join Table I beside the rest.


rule preprocess_fine:
    input:
        dataset_root,
    output:
        directory(f"{RESULTS}/preprocessed_fine/{{dataset}}/{{split}}"),
    log:
        f"{RESULTS}/logs/preprocess_fine/{{dataset}}_{{split}}.log",
    params:
        layout=lambda wc: layout_of(wc.dataset),
        grid=REFINE_GRID,
        margin=config["preprocess"]["margin"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        ENV
    script:
        "../scripts/preprocess.py"


rule train_refiner:
    input:
        skulls=expand(f"{RESULTS}/preprocessed_fine/{{dataset}}/train", dataset=config["mae"]["datasets"]),
        # a first stage to learn from (refine.first_stage), else none: the first stage is simulated
        first_stage=lambda wc: config["refine"].get("first_stage", []),
    output:
        model=f"{RESULTS}/networks/refiner.pt",
        history=f"{RESULTS}/training/refiner.csv",
    log:
        f"{RESULTS}/logs/train/refiner.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/refiner.tsv"
    params:
        checkpoints=f"{RESULTS}/checkpoints/refiner",
        # which first stages are refined is the DAG's business, not the network's; the first stage to learn from is
        # an input (its file, not its name, decides a rerun)
        refine=lambda wc: canonical({k: v for k, v in config["refine"].items() if k not in ("methods", "first_stage")}),
        masking=setting("mae", "masking"),
        grid=config["preprocess"]["grid"],
        margin=config["preprocess"]["margin"],
        device=config["device"],
    threads: 8
    priority: 1
    retries: 5
    resources:
        gpu=1,
        gpu_slots=gpu_slots(),
        mem_mb=gpu_job_mem_mb(64000),
        runtime=24 * 60,
    conda:
        ENV
    script:
        "../scripts/train_refiner.py"


rule refine:
    wildcard_constraints:
        method="|".join(REFINED_FIRST) or "none",
    input:
        predictions=f"{RESULTS}/predictions/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
        refiner=f"{RESULTS}/networks/refiner.pt",
    output:
        directory(f"{RESULTS}/upsampled/{{dataset}}/{{method}}_refined"),
    log:
        f"{RESULTS}/logs/refine/{{dataset}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/refine/{{dataset}}_{{method}}.tsv"
    params:
        task=lambda wc: task_of(wc.method),
        threshold=config["postprocess"]["threshold"],
        device=config["device"],
    threads: 2
    retries: 2  # as infer: a GPU job, a lost node is not a deterministic failure
    resources:
        gpu=1,
        gpu_slots=gpu_slots(),
        mem_mb=16000,
        runtime=lambda wc, attempt: 120 * attempt,
    conda:
        ENV
    script:
        "../scripts/refine.py"
