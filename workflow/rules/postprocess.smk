# Back to each case's original grid and spacing, then the implant by morphology. The upsampled
# predictions are kept: a post-processing change reruns extract_implants from them alone.


rule upsample:
    wildcard_constraints:
        method="|".join(METHODS),
    input:
        predictions=f"{RESULTS}/predictions/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/upsampled/{{dataset}}/{{method}}"),
    log:
        f"{RESULTS}/logs/upsample/{{dataset}}_{{method}}.log",
    params:
        threshold=config["postprocess"]["threshold"],
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/upsample.py"


rule extract_implants:
    wildcard_constraints:
        method="|".join(METHODS + REFINED),  # a <method>_surface row's implants come from rules/surface.smk
    input:
        upsampled=f"{RESULTS}/upsampled/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
    output:
        directory(f"{RESULTS}/implants/{{dataset}}/{{method}}"),
    log:
        f"{RESULTS}/logs/extract/{{dataset}}_{{method}}.log",
    params:
        task=lambda wc: task_of(wc.method),
        postprocess=setting("postprocess"),
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/extract_implants.py"
