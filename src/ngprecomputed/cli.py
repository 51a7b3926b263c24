"""``ngprecomputed``: what people run by hand (the workflow's jobs are ``workflow/scripts/``,
which call the package directly): ``run``, ``convert``, ``stats``, ``plan``, ``reencode``,
``serve``, ``view``, ``webconfig``, ``qc``.

Input errors print one line and exit with status 1; anything else is a bug and shows its
traceback. Every subcommand only parses its arguments and calls one package function.
"""

import argparse
import logging
import os
import sys
from pathlib import Path

from .job import job
from .plan import plan_dataset
from .settings import Options

log = logging.getLogger("ngprecomputed")


def cmd_plan(a) -> None:
    """What a dataset will be, from its source header and options (no voxel is read)."""
    plan = plan_dataset(a.dataset, a.source, Options.from_json(a.options))
    plan.save(a.out)
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


def cmd_convert(a) -> None:
    """One volume (or slice stack) to a dataset, no sheet: the sheet's columns as options."""
    from .engine import convert_file

    fields = {k: v for k, v in vars(a).items() if k in Options.__dataclass_fields__}
    options = Options(**{k: v for k, v in fields.items() if v is not None})
    convert_file(a.source, a.out, options, a.processes)


def cmd_stats(a) -> None:
    from .stats import print_stats

    print_stats(a.input, a.shape, a.channels, a.dtype, a.voxel_mm, a.type, a.voxels_per_job)


def cmd_reencode(a) -> None:
    from .reencode import reencode_with

    reencode_with(
        a.source,
        a.dest,
        a.encoding,
        a.jpeg_quality,
        (a.block_size,) * 3 if a.block_size else None,
        a.gzip,
        a.processes,
        shard=a.shard,
    )


def cmd_serve(a) -> None:
    from .serve import serve

    serve(a.root, a.host, a.port, client_url=a.client, convention=a.convention, mirror=a.mirror)


def cmd_view(a) -> None:
    from .serve import view

    view(a.root, a.host, a.port, a.client, a.offline, a.dataset, a.convention, a.mirror)


def cmd_webconfig(a) -> None:
    from .webconfig import configure

    for line in configure(a.root, a.out, a.port):
        print(line)


def cmd_qc(a) -> None:
    """A dataset's QC page (thumbnails, histogram or label counts, bytes per scale)."""
    from .qc import SLAB_VOXELS
    from .report import write_qc

    write_qc(a.dataset, a.out, a.slab_voxels or SLAB_VOXELS)


def cmd_run(a) -> None:
    """The packaged workflow on a sheet, for people who do not want a Snakefile of their own."""
    from .workflow_files import run_workflow

    code = run_workflow(a.sheet, a.results, [x for x in a.snakemake_args if x != "--"])
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
    s.add_argument("--type", choices=["image", "segmentation"])
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

    s = sub.add_parser("reencode", help="re-encode a precomputed dataset (any writer's)")
    s.add_argument("source", type=Path, help="a precomputed dataset folder (with its info)")
    s.add_argument("dest", type=Path)
    s.add_argument(
        "--encoding",
        choices=["raw", "jpeg", "png", "compressed_segmentation"],
        help="default: compressed_segmentation for labels, raw for images",
    )
    s.add_argument("--jpeg-quality", type=int)
    s.add_argument("--block-size", type=int, help="compressed_segmentation block")
    s.add_argument("--gzip", action="store_true", help="gzip every chunk (.gz)")
    s.add_argument(
        "--shard",
        choices=["identity", "murmurhash3_x86_128"],
        help="write sharded scales with this hash (shards of at most 2^27 voxels)",
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
    s.add_argument("--type", choices=["image", "segmentation"])
    s.add_argument("--voxels-per-job", type=int)
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
