"""Writing results straight into a bucket vs to local disk vs local disk then uploaded.

``python benchmarks/s3.py [--factor 4] [--repeat 2]`` starts a real S3 server on loopback
(SeaweedFS, ``tests/s3.py``), converts the MNI T1 upsampled ``factor`` times (x4: 555 M voxels,
``.nii``) with the workflow three ways, best of ``repeat``:

* local: ``results=<folder>``;
* direct: ``results=s3://bench/direct`` (each job uploads what it makes, 8 threads a process);
* local then upload: the local run plus uploading its folder afterwards with the same client
  (boto3, 8 threads, the same Content-Type/Content-Encoding rules).

It prints a markdown table and writes ``benchmarks/s3.md``. The server shares the machine's
cores with the conversion, as it would not in production: ratios, not absolute times.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "benchmarks")]

from run import package_file, upsampled  # noqa: E402
from s3 import S3Server  # noqa: E402

from ngprecomputed.storage import Remote  # noqa: E402

T1 = ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
BUCKET = "bench"


def convert(work: Path, sheet: Path, results: str, env: dict) -> float:
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--cores", "2"]
    cmd += ["--config", f"samples={sheet}", f"results={results}", "qc=false", "-q"]
    start = time.monotonic()
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the workflow failed:\n{done.stderr[-3000:]}")
    return time.monotonic() - start


def upload(folder: Path, url: str) -> float:
    """Every file of a local results folder (not its bookkeeping) to ``url``, 8 threads."""
    remote = Remote.from_url(url)
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] not in (".work", "logs")
    ]
    start = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        for f in [pool.submit(remote.put_file, p, p.relative_to(folder).as_posix()) for p in files]:
            f.result()
    return time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--factor", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "s3")
    a = ap.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    source = upsampled(package_file(*T1), a.factor, a.out / f"t1_x{a.factor}.nii")
    sheet = a.out / "sheet.csv"
    sheet.write_text(f"dataset,path,type\nt1,{source},image\n")
    rows = []
    with S3Server() as server:
        server.make_bucket(BUCKET)
        env = {**os.environ, **server.env, "AWS_ENDPOINT_URL_S3": server.endpoint}
        os.environ.update(env)
        best = {"local": [], "direct": [], "upload": []}
        for k in range(a.repeat):
            best["local"].append(convert(a.out / "local", sheet, str(a.out / "local" / "r"), env))
            best["upload"].append(upload(a.out / "local" / "r", f"s3://{BUCKET}/uploaded{k}"))
            direct = f"s3://{BUCKET}/direct{k}"
            best["direct"].append(convert(a.out / "direct", sheet, direct, env))
        local, up, direct = min(best["local"]), min(best["upload"]), min(best["direct"])
        rows.append((f"T1 x{a.factor}, .nii", local, direct, local + up))
    lines = [
        "Machine: 2 cores; S3: SeaweedFS on loopback (sharing the cores); best of "
        f"{a.repeat}; ours `snakemake --cores 2`, QC off.",
        "",
        "| input | local disk s | straight into the bucket s | local, then uploaded s"
        " | direct / local | direct / (local + upload) |",
        "|---|---|---|---|---|---|",
    ]
    for name, loc, dr, both in rows:
        lines.append(
            f"| {name} | {loc:.2f} | {dr:.2f} | {both:.2f} | {dr / loc:.2f}x | {dr / both:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    (ROOT / "benchmarks" / "s3.md").write_text(text)


if __name__ == "__main__":
    main()
