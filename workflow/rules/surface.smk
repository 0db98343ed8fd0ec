# The surface stage (issue 37, skullrecon.surfaces): no network. Each first stage's single-stage implants and the
# defective skulls in, the skull's own surfaces continued over the hole each implant fills, at the scan's resolution.
# A rule of its own after extract_implants: adding or changing it reruns no network and no upsampling; its rows
# (<method>_surface) join Table I beside the rest.


rule surface:
    wildcard_constraints:
        method="|".join(SURFACE_FIRST) or "none",
    input:
        implants=f"{RESULTS}/implants/{{dataset}}/{{method}}",
        cases=f"{RESULTS}/preprocessed/{{dataset}}/test",
        # a generalisation set's skulls are its source's test skulls: the source's model, of its training skulls
        shape_model=lambda wc: [f"{RESULTS}/networks/shape_model_{GENERALISATION.get(wc.dataset, wc.dataset)}.npz"]
        if SHAPE_MODEL
        else [],
    output:
        directory(f"{RESULTS}/implants/{{dataset}}/{{method}}_surface"),
    log:
        f"{RESULTS}/logs/surface/{{dataset}}_{{method}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/surface/{{dataset}}_{{method}}.tsv"
    params:
        surface=lambda wc: canonical({k: v for k, v in (SURFACE or {}).items() if k not in ("methods", "shape_model")}),
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        ENV
    script:
        "../scripts/surface.py"
