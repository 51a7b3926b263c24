"""``ngprecomputed``: one subcommand per stage, as the workflow's rules call them.

Every stage can be run and debugged by hand, without Snakemake. Input errors print one line and
exit with status 1; anything else is a bug and shows its traceback.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

import numpy as np

from .errors import InputError, naming
from .job import job
from .plan import Options, Plan, chunk_counts, make_plan, source_options
from .pyramid import build_slab
from .sources import open_source
from .sources.volume import build_gzip_index
from .store import write_atomic

log = logging.getLogger("ngprecomputed")


def planned(a) -> Plan:
    """The dataset's plan, from its source header and options (cheap: no voxel is read)."""
    options = Options.from_json(a.options)
    with naming(a.dataset):
        return make_plan(a.dataset, open_source(a.source, **source_options(options)), options)


def cmd_plan(a) -> None:
    plan = planned(a)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(a.out, plan.to_json().encode())
    log.info(
        "%s: %s %s x%d, %d scales, %d jobs in %d stages",
        plan.dataset,
        plan.type,
        plan.data_type,
        plan.num_channels,
        len(plan.scales),
        plan.jobs,
        len(plan.stages),
    )


def cmd_gzindex(a) -> None:
    a.out.parent.mkdir(parents=True, exist_ok=True)
    build_gzip_index(a.source, a.out)


def cmd_decompress(a) -> None:
    from .sources.volume import decompress

    a.out.parent.mkdir(parents=True, exist_ok=True)
    decompress(a.source, a.out)


def cmd_build(a) -> None:
    plan = planned(a)
    with naming(plan.dataset):
        build_slab(
            plan, a.root, a.stage, a.slab, a.manifest, a.gzip_index, a.scratch, a.decompressed
        )


def cmd_finalize(a) -> None:
    """Build the last stage when it is one slab (it runs after every other job), then write
    ``transform.json`` and, last, ``info``."""
    from .engine import finalize

    plan = planned(a)
    finalize(plan, a.root, Options.from_json(a.options).labels, a.gzip_index, a.scratch)


def cmd_convert(a) -> None:
    """One volume (or slice stack) to a dataset in one process, its slabs over the cores: the
    same package functions and the same bytes as the workflow, without a sheet."""
    import tempfile

    from .batches import pooled_plan
    from .engine import Work, convert

    fields = {k: v for k, v in vars(a).items() if k in Options.__dataclass_fields__}
    options = Options(**{k: v for k, v in fields.items() if v is not None})
    name = a.out.name
    with naming(name):
        source = open_source(a.source, **source_options(options))
        plan, workers = pooled_plan(name, source, options, a.processes)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}.", dir=a.out.parent) as scratch:
        convert(Work(plan, a.out, Path(scratch), labels=options.labels, source=source), workers)
    log.info("%s: %d scales, %d slabs, %d workers", a.out, len(plan.scales), plan.jobs, workers)


def cmd_surfaces(a) -> None:
    """Mesh files tied to segments by the row's mesh table; the job's manifest last."""
    from .meshes.surfaces import write_surfaces
    from .store import write_manifest

    plan = planned(a)
    with naming(plan.dataset):
        written = write_surfaces(plan, Path(Options.from_json(a.options).meshes), a.root, a.colon)
    write_manifest(a.manifest, {"dataset": plan.dataset, "segments": written})
    log.info("%s: meshes of %d segments", plan.dataset, len(written))


def generated_meshes(a):
    """The plan, the ``meshes`` setting and the regions of a dataset whose meshes are
    generated (``generate`` or ``multilod``)."""
    from .meshes.generate import FORMATS, plan_regions

    plan = planned(a)
    meshes = Options.from_json(a.options).meshes
    if meshes not in FORMATS:
        raise InputError(f"meshes is {meshes!r}: only generate and multilod are generated")
    return plan, meshes, plan_regions(plan.scales[0].size, a.region_voxels)


def cmd_mesh_region(a) -> None:
    """One region of a segmentation meshed (``meshes``: generate, multilod); its record last."""
    from .meshes.generate import mesh_region

    with naming(a.dataset):
        plan, meshes, regions = generated_meshes(a)
        done = mesh_region(
            plan, regions, a.region, a.root, a.manifest, meshes == "multilod", a.gzip_index
        )
    log.info("%s: region %d: %d fragments", plan.dataset, a.region, len(done["fragments"]))


def cmd_meshes(a) -> None:
    """Manifests and ``mesh/info`` of generated meshes, from the regions' records; then the
    job's own record."""
    from .meshes.generate import FORMATS, write_meshes
    from .store import write_manifest

    with naming(a.dataset):
        plan, meshes, regions = generated_meshes(a)
        counts = write_meshes(plan, regions, a.regions, a.root, a.colon, meshes == "multilod")
    segments = {str(k): v for k, v in sorted(counts.items())}
    write_manifest(
        a.manifest,
        {
            "dataset": plan.dataset,
            "format": FORMATS[meshes],
            "regions": regions.count,
            "segments": segments,
        },
    )
    log.info("%s: %s meshes of %d segments", plan.dataset, FORMATS[meshes], len(counts))


def cmd_vtk(a) -> None:
    """One mesh file as Neuroglancer's VTK mesh (world millimetres to nanometres)."""
    from .meshes.legacy import MM_TO_NM, write_vtk
    from .meshes.read import read_mesh

    with naming(a.dataset):
        mesh = read_mesh(a.source)
    write_vtk(a.out, mesh.transformed(np.diag([MM_TO_NM] * 3 + [1.0])), title=a.dataset)
    log.info("%s: %d vertices, %d triangles", a.out, len(mesh.vertices), len(mesh.faces))


def cmd_stats(a) -> None:
    from .resources import job_mem_mb, job_runtime_min
    from .sheet import load_sheet
    from .sources.header import HeaderOnly

    opts = Options(type=a.type, voxels_per_job=a.voxels_per_job)
    if a.shape:
        source = HeaderOnly((*a.shape, a.channels), np.dtype(a.dtype), (a.voxel_mm,) * 3)
        items = [("x".join(map(str, a.shape)), source, opts)]
    elif a.input is None:
        raise InputError("stats: give a sample sheet, a volume file, or --shape")
    elif a.input.suffix == ".csv":
        items = [(d.name, d.path, d.options) for d in load_sheet(a.input, opts)]
    else:
        items = [(a.input.name, a.input, opts)]
    print(f"{'dataset':<24} {'scale':<28} {'size':<18} {'chunk':<14} {'files':>8} {'MiB':>10}")
    for name, source, o in items:
        if not isinstance(source, HeaderOnly):
            source = open_source(source, **source_options(o))
        plan = make_plan(name, source, o)
        for row in chunk_counts(plan):
            size = "x".join(map(str, row["size"]))
            chunk = "x".join(map(str, row["chunk"]))
            print(
                f"{name:<24} {row['key']:<28} {size:<18} {chunk:<14} {row['files']:>8} "
                f"{row['bytes'] / 2**20:>10.1f}"
            )
        jobs = [(s, i) for s, stage in enumerate(plan.stages) for i in range(stage.count)]
        mem = max(job_mem_mb(plan, s, i) for s, i in jobs)
        runtime = max(job_runtime_min(plan, s, i) for s, i in jobs)
        print(
            f"{name:<24} {'(pyramid jobs)':<28} {plan.jobs} jobs, largest mem_mb {mem}, "
            f"runtime {runtime} min"
        )


def cmd_reencode(a) -> None:
    from .plan import codec_options, default_encoding
    from .reencode import read_info, reencode

    encoding = a.encoding or default_encoding(read_info(a.source)["type"])
    options = codec_options(encoding, a.jpeg_quality, (a.block_size,) * 3)
    reencode(a.source, a.dest, encoding, options, a.gzip, a.processes, shard=a.shard)


def cmd_serve(a) -> None:
    from .serve import serve

    serve(a.root, a.host, a.port, client_url=a.client, convention=a.convention, mirror=a.mirror)


def cmd_view(a) -> None:
    """Serve the results and, unless a client URL is given, the web client of the
    ``neuroglancer`` wheel (no internet needed; the same origin as the data)."""
    from .serve import serve
    from .viewer import bundled_client

    client = None if a.client else bundled_client()
    if a.offline and client is None:
        raise InputError(
            "view --offline: the neuroglancer package (its web client) is not installed "
            "(pip install neuroglancer)" + (", and --client was given" if a.client else "")
        )
    if client is None and not a.client:
        log.warning("neuroglancer is not installed: links use the public demo client")
    serve(
        a.root,
        a.host,
        a.port,
        client=client,
        client_url=a.client,
        only=a.dataset,
        convention=a.convention,
        mirror=a.mirror,
    )


def cmd_webconfig(a) -> None:
    from .storage import is_remote
    from .webconfig import apply_bucket_cors, write_configs

    if is_remote(a.root):  # a bucket: its CORS configuration, set
        apply_bucket_cors(a.root)
        print(f"{a.root}: CORS set for the viewer (GET, HEAD, Range from any origin)")
        return
    if a.out is None:
        raise InputError("webconfig: --out FOLDER is needed for a results folder")
    for path in write_configs(Path(a.root), a.out, port=a.port):
        print(path)


def cmd_qc(a) -> None:
    """A dataset's QC page (thumbnails, histogram or label counts, bytes per scale)."""
    from .qc import SLAB_VOXELS
    from .report import write_qc

    write_qc(a.dataset, a.out, a.slab_voxels or SLAB_VOXELS)


def cmd_run(a) -> None:
    """The packaged workflow on a sheet, for people who do not want a Snakefile of their own."""
    import subprocess

    from .workflow_files import workflow_root

    root = workflow_root()
    extra = [x for x in a.snakemake_args if x != "--"]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(root / "Snakefile")]
    # A profile (profiles/slurm) sets its own cores.
    sized = ("--cores", "-c", "-j", "--jobs", "--profile", "--workflow-profile")
    if not any(x in extra for x in sized):
        cmd += ["--cores", "all"]
    if "--workflow-profile" not in extra:
        cmd += ["--workflow-profile", str(root / "profiles" / "local")]
    cmd += [*extra, "--config", f"samples={a.sheet.resolve()}", f"results={a.results}"]
    log.debug("running %s", " ".join(cmd))
    code = subprocess.call(cmd)
    if code:
        raise SystemExit(code)


ROOT_HELP = "a results folder, one dataset's folder, or s3://bucket/prefix (default: results)"


def add_view_options(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--mirror",
        type=Path,
        default=Path("s3-mirror"),
        help="for s3:// results: the workflow's local mirror (s3_mirror) with their info files",
    )
    s.add_argument(
        "--radiological",
        dest="convention",
        action="store_const",
        const="radiological",
        default="neurological",
        help="the subject's left on the screen's right (default: on the left, neurological)",
    )


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ngprecomputed", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument("--log", type=Path, help="also write the log to this file")
    p.add_argument("--mem-mb", type=int, help="the memory the job was given (its log compares)")
    sub = p.add_subparsers(dest="command", required=True)

    def dataset_args(s):
        s.add_argument("source", help="the input volume, or slice stack (folders/patterns, ';')")
        s.add_argument("--dataset", required=True, help="the dataset's name")
        s.add_argument("--options", default="{}", help="per-dataset options as JSON")

    s = sub.add_parser("plan", help="plan a dataset from its source header (writes plan JSON)")
    dataset_args(s)
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser(
        "convert",
        help="convert one volume or slice stack, no sheet (slabs over the cores)",
        description="The sheet's columns are options; the output folder's name is the dataset's.",
    )
    s.add_argument("source", help="a volume file, or a slice stack (folders/patterns, ';')")
    s.add_argument("out", type=Path, help="the dataset folder to write")
    s.add_argument("--type", choices=["image", "segmentation"], default="image")
    s.add_argument("--data-type", help="stored data type (default: the source's, see README)")
    s.add_argument("--encoding", choices=["raw", "jpeg", "png", "compressed_segmentation"])
    s.add_argument("--jpeg-quality", type=int)
    s.add_argument("--block-size", type=lambda v: (int(v),) * 3, help="compressed_segmentation")
    s.add_argument("--chunk-size", type=lambda v: (int(v),) * 3, help="chunk side (voxels)")
    s.add_argument("--max-scales", type=int)
    s.add_argument("--input-min", type=float)
    s.add_argument("--input-max", type=float)
    s.add_argument("--gzip", action="store_true", default=None, help="gzip every chunk")
    s.add_argument("--sharded", action="store_true", default=None)
    s.add_argument("--labels", help="a label table (segment names and colours)")
    s.add_argument("--voxel-size", type=lambda v: (float(v),) * 3, help="slice stacks, mm")
    s.add_argument("--orientation", help="slice stacks: e.g. RIA")
    s.add_argument("--voxels-per-job", type=int, help="voxels held in memory at once")
    s.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("gzindex", help="index a gzip-compressed source for random access")
    s.add_argument("source", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--dataset", help="the dataset it is for (named in errors)")
    s.set_defaults(func=cmd_gzindex)

    s = sub.add_parser("build", help="write one slab of one pyramid stage")
    dataset_args(s)
    s.add_argument("--stage", type=int, required=True)
    s.add_argument("--slab", type=int, required=True)
    s.add_argument("--root", type=Path, required=True, help="the dataset's output folder")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--gzip-index", type=Path)
    s.add_argument("--decompressed", type=Path, help="the .gz source, decompressed")
    s.add_argument("--scratch", type=Path, help="raw copies for lossy encodings")
    s.set_defaults(func=cmd_build)

    s = sub.add_parser("decompress", help="a gzip-compressed source decompressed once")
    s.add_argument("source", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--dataset", help="the dataset it is for (named in errors)")
    s.set_defaults(func=cmd_decompress)

    s = sub.add_parser("finalize", help="last stage (if one slab), transform.json, then info")
    dataset_args(s)
    s.add_argument("--root", type=Path, required=True, help="the dataset's output folder")
    s.add_argument("--gzip-index", type=Path)
    s.add_argument("--scratch", type=Path, help="raw copies for lossy encodings")
    s.set_defaults(func=cmd_finalize)

    s = sub.add_parser("surfaces", help="mesh files tied to segments by a mesh table")
    dataset_args(s)
    s.add_argument("--root", type=Path, required=True, help="the dataset's output folder")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--no-colon", dest="colon", action="store_false", help="<id>.json manifests")
    s.set_defaults(func=cmd_surfaces)

    s = sub.add_parser("mesh-region", help="mesh one region of a segmentation's labels")
    dataset_args(s)
    s.add_argument("--region", type=int, required=True)
    s.add_argument("--region-voxels", type=int, required=True, help="voxels a region reads")
    s.add_argument("--root", type=Path, required=True, help="the dataset's output folder")
    s.add_argument("--manifest", type=Path, required=True, help="the region's record")
    s.add_argument("--gzip-index", type=Path)
    s.set_defaults(func=cmd_mesh_region)

    s = sub.add_parser("meshes", help="manifests and mesh/info of meshes made by mesh-region")
    dataset_args(s)
    s.add_argument("--region-voxels", type=int, required=True, help="voxels a region reads")
    s.add_argument("--regions", type=Path, required=True, help="folder of the regions' records")
    s.add_argument("--root", type=Path, required=True, help="the dataset's output folder")
    s.add_argument("--manifest", type=Path, required=True)
    s.add_argument("--no-colon", dest="colon", action="store_false", help="<id>.json manifests")
    s.set_defaults(func=cmd_meshes)

    s = sub.add_parser("vtk", help="one mesh file as Neuroglancer's VTK mesh (nm)")
    s.add_argument("source", type=Path)
    s.add_argument("out", type=Path)
    s.add_argument("--dataset", required=True)
    s.set_defaults(func=cmd_vtk)

    s = sub.add_parser("reencode", help="re-encode a precomputed dataset (any writer's)")
    s.add_argument("source", type=Path, help="a precomputed dataset folder (with its info)")
    s.add_argument("dest", type=Path)
    s.add_argument(
        "--encoding",
        choices=["raw", "jpeg", "png", "compressed_segmentation"],
        help="default: compressed_segmentation for labels, raw for images",
    )
    s.add_argument("--jpeg-quality", type=int, default=Options.jpeg_quality)
    s.add_argument("--block-size", type=int, default=8, help="compressed_segmentation block")
    s.add_argument("--gzip", action="store_true", help="gzip every chunk (.gz)")
    s.add_argument(
        "--shard",
        choices=["identity", "murmurhash3_x86_128"],
        help="write sharded scales with this hash (shards of about 2^27 voxels)",
    )
    s.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    s.set_defaults(func=cmd_reencode)

    s = sub.add_parser("serve", help="serve a results folder to Neuroglancer (CORS, Range, .gz)")
    s.add_argument("root", nargs="?", default="results", help=ROOT_HELP)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--client", help="Neuroglancer client of the printed links (default: demo)")
    add_view_options(s)
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("view", help="serve results and the Neuroglancer client; print links")
    s.add_argument("root", nargs="?", default="results", help=ROOT_HELP)
    s.add_argument("--dataset", action="append", help="only this dataset (repeatable)")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--client", help="link to this client URL instead of serving the wheel's")
    s.add_argument(
        "--offline", action="store_true", help="fail unless the wheel's client can be served"
    )
    add_view_options(s)
    s.set_defaults(func=cmd_view)

    s = sub.add_parser(
        "webconfig", help="nginx and Apache configs serving a results folder; a bucket's CORS"
    )
    s.add_argument("root", help="the results folder, or s3://bucket (its CORS is set)")
    s.add_argument("--out", type=Path, help="folder for the config files (a results folder)")
    s.add_argument("--port", type=int, default=8080)
    s.set_defaults(func=cmd_webconfig)

    s = sub.add_parser("qc", help="a dataset's QC page (HTML), as the workflow's report shows")
    s.add_argument("dataset", type=Path, help="a precomputed dataset folder (with its info)")
    s.add_argument("--out", type=Path, required=True, help="the HTML page to write")
    s.add_argument("--slab-voxels", type=int, help="voxels read at once (bounds memory)")
    s.set_defaults(func=cmd_qc)

    s = sub.add_parser(
        "run",
        help="run the packaged workflow on a sample sheet",
        description="Extra arguments go to Snakemake, e.g. "
        "ngprecomputed run sheet.csv -- --profile profiles/slurm -n",
    )
    s.add_argument("sheet", type=Path)
    s.add_argument("--results", default="results", help="output root (default: results)")
    s.add_argument("snakemake_args", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("stats", help="scales, chunks, files and bytes before anything is written")
    s.add_argument("input", type=Path, nargs="?", help="a sample sheet (.csv) or a volume file")
    s.add_argument("--type", choices=["image", "segmentation"], default="image")
    s.add_argument("--voxels-per-job", type=int, default=Options.voxels_per_job)
    s.add_argument("--shape", type=int, nargs=3, metavar=("X", "Y", "Z"), help="a volume by size")
    s.add_argument("--dtype", default="uint8", help="with --shape (default uint8)")
    s.add_argument("--channels", type=int, default=1, help="with --shape")
    s.add_argument("--voxel-mm", type=float, default=1.0, help="with --shape (isotropic)")
    s.set_defaults(func=cmd_stats)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    dataset = getattr(args, "dataset", None)
    try:
        with job(
            args.log, args.mem_mb, dataset if isinstance(dataset, str) else None, args.verbose
        ):
            args.func(args)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
