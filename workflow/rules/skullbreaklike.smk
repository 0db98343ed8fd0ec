# A SkullBreak-like dataset (issue 38): SkullBreak's five defect kinds cut into the complete skulls of
# another dataset (the real SkullFix skulls in realdata/), written in SkullBreak's own layout
# (training/, evaluation/; complete_skull, defective_skull/<kind>, implant/<kind>) so that the SkullBreak
# adapter reads it as it reads the downloaded dataset. Off unless the config has a `skullbreaklike:`
# section; skullrecon.skullbreaklike and docs/datasets.md say how the defects are made.


rule skullbreaklike_dataset:
    input:
        lambda wc: root_of(config["skullbreaklike"]["source"]),
    output:
        directory(f"{RESULTS}/data/skullbreaklike"),
    log:
        f"{RESULTS}/logs/skullbreaklike.log",
    params:
        layout=lambda wc: canonical(config["datasets"][config["skullbreaklike"]["source"]]["layout"]),
        spec=lambda wc: canonical(config["skullbreaklike"]),
    resources:
        mem_mb=4000,
        runtime=180,  # measured 22 s and 0.8 GB a real skull (5 cuts, 10 gzip NRRD writes, 2 busy cores): 59 skulls ~25 min
    conda:
        ENV
    script:
        "../scripts/skullbreaklike.py"
