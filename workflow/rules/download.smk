# Downloads (config `downloads:`, paper.yaml): fetch with resume and retries (inside the job: fmextract.download, so
# a missing url or a wrong checksum fails once, with one line), then verify sha256 into a stamp.
# Consumers read the file through ancient() plus its stamp, so touching a multi-GB file never re-triggers work,
# and a file the user placed by hand is verified too.


localrules:
    download,
    verify_download,


rule download:
    output:
        path="{path}",
    log:
        "results/logs/download/{path}.log",
    conda:
        "../../envs/core.yaml"
    params:
        spec=lambda wc: download_spec(wc.path),
    script:
        "../scripts/download.py"


rule verify_download:
    input:
        path=lambda wc: ancient(config["downloads"][wc.name]["path"]),
    output:
        stamp="results/downloads/{name}.sha256",
    log:
        "results/logs/download/verify_{name}.log",
    conda:
        "../../envs/core.yaml"
    params:
        spec=lambda wc: {**config["downloads"][wc.name], "name": wc.name},
    script:
        "../scripts/download.py"
