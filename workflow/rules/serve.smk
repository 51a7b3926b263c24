# Serving: `snakemake view` serves the results with Neuroglancer's web client and prints a link
# per dataset (Ctrl-C stops it); `snakemake webconfig` writes nginx/Apache configurations to
# <results>/.work/webconfig/ (copy .htaccess into <results>/ for Apache without a vhost).


rule view:
    input:
        all_targets,
    log:
        LOGS / "view.log",
    localrule: True
    conda:
        "../envs/ngprecomputed.yaml"
    params:
        results=RESULTS,
        port=config.get("port", 8000),
    shell:
        "ngprecomputed --log {log:q} view {params.results:q} --port {params.port}"


rule webconfig:
    input:
        all_targets,
    output:
        WORK / "webconfig" / "nginx.conf",
        WORK / "webconfig" / "apache.conf",
        WORK / "webconfig" / ".htaccess",
        WORK / "webconfig" / "s3-cors.json",
    log:
        LOGS / "webconfig.log",
    localrule: True
    conda:
        "../envs/ngprecomputed.yaml"
    params:
        results=RESULTS,
        out=WORK / "webconfig",
        port=config.get("port", 8080),
    shell:
        "ngprecomputed --log {log:q} webconfig {params.results:q} --out {params.out:q}"
        " --port {params.port}"
