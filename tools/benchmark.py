"""Benchmarks from the command line.

python tools/benchmark.py layers [--full] [--device cpu] [--dtype float32] [--channels 64] [--heads 8]
                                 [--kernel-size 7] [--height 48] [--width 80] [--batch 1]
                                 [--repeats 3] [--json out.json]
       (a line per case as it finishes; the defaults take about 2 minutes on a 2-core CPU, --full a 96×160
       map with 5 timed steps per case)
python tools/benchmark.py model  [--device cpu] [--dtype float32] [--height 256] [--width 256] [--batch 1]
python tools/benchmark.py eval   [--images 5000] [--segm-images 300] [--memory-images 5000] [--repeats 1]
python tools/benchmark.py data   [--work-dir data/coco_sized] [--images 118287] [--instances 860001] [--workers 4]
                                 [--batches 300] [--batch-size 4] [--no-masks] [--compare-list] [--json out.json]
python tools/benchmark.py kernels [--dtypes bfloat16 float32] [--head-widths 8 16 32 64] [--path tensor_core]
                                  [--json out.json]
python tools/benchmark.py finetune [--config configs/custom/retinanet_small_cpu.yaml] [--steps 600]
                                   [--starts scratch demo] [--out outputs/finetune_letters] [--json out.json]
       (the recipe for one's own data on a generated two-class VOC set of letters, from each starting point;
       `demo` needs `make demo` first)
python tools/benchmark.py all    [--device cuda] [--output docs/benchmarks.md]
python tools/benchmark.py zoo    [--rows conv aa ...] [--seeds 2] [--steps 200] [--jobs 2] [--threads T] [--quick]
                                 [--output-dir outputs/zoo] [--output docs/zoo_table.md]
       (every detector family trained at one budget on the hard shapes set: params, FLOPs, CPU step time,
       mAP mean ± spread over seeds; finished runs are reused; see docs/zoo.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sasa_det.cli import run_tool

REPO = Path(__file__).resolve().parents[1]

#: ``layers`` settings by default (about 2 minutes on a 2-core CPU) and with ``--full`` (the map of the report).
LAYERS_QUICK = {"height": 48, "width": 80, "repeats": 3}
LAYERS_FULL = {"height": 96, "width": 160, "repeats": 5}


def add_layers_parser(subparsers) -> None:
    parser = subparsers.add_parser("layers", help="forward+backward time and peak memory of the attention layers")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--full", action="store_true", help="the full sweep: a 96×160 map, 5 timed steps per case")
    parser.add_argument("--height", type=int, help="map height (default 48; 96 with --full)")
    parser.add_argument("--width", type=int, help="map width (default 80; 160 with --full)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, help="timed steps per case, median reported (default 3; 5 with --full)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per case")
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="subset of rows (names as in the table)")
    parser.add_argument("--max-attention-gib", type=float, default=4.0, help="skip AA cases needing more")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.set_defaults(run=run_layers)


def _check_cases(names, cases) -> None:
    unknown = sorted(set(names or ()) - {case.name for case in cases})
    if unknown:
        sys.exit(f"error: unknown case(s) {unknown}; choose from {[case.name for case in cases]}")


def run_layers(args: argparse.Namespace) -> int:
    import time

    import torch

    from sasa_det.analysis.layer_benchmark import (
        LAYER_CASES,
        benchmark_layers,
        format_layer_progress,
        format_layer_table,
    )

    _check_cases(args.cases, LAYER_CASES)
    for key, value in (LAYERS_FULL if args.full else LAYERS_QUICK).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    start = time.perf_counter()

    def progress(row: dict, done: int, total: int) -> None:
        print(format_layer_progress(row, done, total, time.perf_counter() - start), file=sys.stderr, flush=True)

    results = benchmark_layers(
        device=args.device,
        dtype=args.dtype,
        channels=args.channels,
        heads=args.heads,
        kernel_size=args.kernel_size,
        height=args.height,
        width=args.width,
        batch=args.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        cases=args.cases,
        max_attention_bytes=int(args.max_attention_gib * 2**30),
        progress=progress,
    )
    print(
        f"torch {torch.__version__}, device {args.device}, {args.dtype}, {torch.get_num_threads()} CPU threads; "
        f"C={args.channels}, heads={args.heads}, k={args.kernel_size}, map {args.batch}×{args.height}×{args.width}; "
        f"median of {args.repeats} runs after {args.warmup} warm-up; ratios vs the baseline row of the same run"
    )
    print(format_layer_table(results, args.device))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"settings": vars(args) | {"json": str(args.json), "run": None}, "results": results}, indent=2)
        )
    return 0


def add_model_parser(subparsers) -> None:
    parser = subparsers.add_parser("model", help="training and inference throughput of the detectors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16: autocast")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", metavar="CASE", help="subset of rows (names as in the table)")
    parser.set_defaults(run=run_model)


def run_model(args: argparse.Namespace) -> int:
    import torch

    from sasa_det.analysis.model_benchmark import MODEL_CASES, benchmark_models, format_model_table

    _check_cases(args.cases, MODEL_CASES)
    settings = ("device", "dtype", "height", "width", "batch", "repeats", "cases")
    results = benchmark_models(**{name: getattr(args, name) for name in settings})
    print(
        f"torch {torch.__version__}, device {args.device}, {args.dtype}, batch {args.batch} of "
        f"{args.height}×{args.width}; ratios vs torchvision's RetinaNet in the same run"
    )
    print(format_model_table(results))
    return 0


def add_eval_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval", help="COCO evaluation: the evaluator's backends against pycocotools, faster-coco-eval and hotcoco alone"
    )
    parser.add_argument("--images", type=int, default=5000, help="images of the bbox set")
    parser.add_argument("--segm-images", type=int, default=300, help="images of the segm set (0: skip)")
    parser.add_argument(
        "--memory-images", type=int, default=5000, help="images whose masks are evaluated for peak memory (0: skip)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per row (median reported)")
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.set_defaults(run=run_eval)


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from sasa_det.analysis.eval_benchmark import benchmark_eval, format_eval_report

    results = benchmark_eval(args.images, args.segm_images, args.memory_images, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads; ratios within this run")
    return _report(format_eval_report(results), results, args.json)


def _report(table: str, results: dict, json_path: Path | None) -> int:
    """Print a benchmark's table and write its figures to ``json_path`` when given; exit status 0."""
    print(table)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(results, indent=2))
    return 0


def add_data_parser(subparsers) -> None:
    parser = subparsers.add_parser("data", help="COCO-sized data pipeline: build time, main and worker memory")
    parser.add_argument("--work-dir", type=Path, default=Path("data/coco_sized"), help="generated split goes here")
    parser.add_argument("--images", type=int, default=118_287, help="images of the generated split (COCO train)")
    parser.add_argument("--instances", type=int, default=860_001, help="instances of the generated split")
    parser.add_argument("--workers", type=int, default=4, help="loader workers")
    parser.add_argument("--batches", type=int, default=300, help="batches loaded before memory is read")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--no-masks", action="store_true", help="records without segmentations (RetinaNet)")
    parser.add_argument("--compare-list", action="store_true", help="also measure records as a Python list")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.set_defaults(run=run_data)


def run_data(args: argparse.Namespace) -> int:
    from sasa_det.analysis.coco_sized_annotations import write_coco_sized_split
    from sasa_det.analysis.data_benchmark import benchmark_data, format_data_report

    split = write_coco_sized_split(args.work_dir, num_images=args.images, num_instances=args.instances)
    results = benchmark_data(
        split["ann_file"],
        split["image_dir"],
        with_masks=not args.no_masks,
        workers=args.workers,
        batches=args.batches,
        batch_size=args.batch_size,
        compare_list=args.compare_list,
    )
    return _report(format_data_report(results), results, args.json)


def add_kernels_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "kernels", help="compile the SASA Triton kernels for sm_90 (no GPU needed): registers, spills, SASS, barriers"
    )
    parser.add_argument(
        "--dtypes", nargs="+", default=["bfloat16", "float32"], choices=["bfloat16", "float16", "float32", "float64"]
    )
    parser.add_argument("--head-widths", nargs="+", type=int, default=[8, 16, 32, 64])
    parser.add_argument("--kernel-size", type=int, default=7)
    parser.add_argument("--capability", type=int, default=90, help="compute capability to compile for (90: H100/H200)")
    parser.add_argument("--path", choices=["cuda_core", "tensor_core"], help="only this kernel family")
    parser.add_argument("--json", type=Path, help="also write one record per kernel × dtype × head width here")
    parser.set_defaults(run=run_kernels)


def run_kernels(args: argparse.Namespace) -> int:
    from sasa_det.analysis.kernel_report import (
        PATH_LIMITS,
        REPORT_LIMITS,
        check_limits,
        format_kernel_table,
        kernel_report,
    )

    def progress(record) -> None:
        print(
            f"compiled {record.kernel} [{record.config}] {record.dtype} d={record.head_width} in "
            f"{record.compile_seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )

    records = kernel_report(
        tuple(args.dtypes), tuple(args.head_widths), args.kernel_size, args.capability, progress, args.path
    )
    print(
        f"Triton {records[0].triton if records else '?'}, target {records[0].target if records else '?'}, "
        f"k={args.kernel_size}; limits {REPORT_LIMITS}, by kernel family {PATH_LIMITS}"
    )
    print(format_kernel_table(records))
    if args.json is not None:
        from dataclasses import asdict

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(record) for record in records], indent=2))
    problems = check_limits(records)
    for problem in problems:
        print(f"over the limit: {problem}")
    return 1 if problems else 0


def add_all_parser(subparsers) -> None:
    parser = subparsers.add_parser("all", help="every benchmark for one device, as a markdown report")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--eval-images", type=int, default=5000)
    parser.add_argument("--time-budget", type=float, default=420.0, help="seconds; later sections are skipped")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path("docs/benchmarks.md"),
        help="report appended here (created with a title if missing)",
    )
    parser.set_defaults(run=run_all_benchmarks)


def run_all_benchmarks(args: argparse.Namespace) -> int:
    from sasa_det.analysis.benchmark_report import run_all

    report = run_all(args.device, args.eval_images, args.time_budget, argv=sys.argv[1:])
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    existing = args.output.read_text() if args.output.exists() else "# Benchmarks\n"
    args.output.write_text(existing.rstrip("\n") + "\n\n" + report)
    return 0


def add_finetune_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune", help="the recipe for one's own data on a held-out letters set, from scratch and from the demo"
    )
    parser.add_argument(
        "--config", default="configs/custom/retinanet_small_cpu.yaml", help="the recipe (an experiment config)"
    )
    parser.add_argument("--steps", type=int, default=600, help="training steps of every run (equal budget)")
    parser.add_argument(
        "--starts", nargs="+", default=["scratch", "demo"], help="starting points: scratch, demo (model.init_from)"
    )
    parser.add_argument("--out", type=Path, default=Path("outputs/finetune_letters"), help="data and runs go here")
    parser.add_argument("overrides", nargs="*", help="further key=value overrides of every run")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.set_defaults(run=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    from sasa_det.analysis.finetune_benchmark import STARTS, finetune_table, run_finetune_benchmark

    unknown = [start for start in args.starts if start not in STARTS]
    if unknown:
        raise SystemExit(f"error: unknown --starts {unknown}; choose among {list(STARTS)}")
    demo_config = REPO / "configs" / "shapes_demo.yaml"
    rows = run_finetune_benchmark(
        args.config, args.out, args.steps, args.starts, args.overrides, demo_config=demo_config
    )
    return _report(finetune_table(rows), {"rows": rows}, args.json)


#: ``zoo --steps`` default: the equal training budget of every run, sized so that every row learns and 8 rows x 2
#: seeds fit in 45 minutes on 2 cores with --jobs 2 (measured: 31 minutes; ms/step at 128 px, batch 8, one thread
#: each: conv RetinaNet 205, all-attention RetinaNet 898, Mask R-CNN 867; docs/zoo.md).
ZOO_STEPS = 400


def add_zoo_parser(subparsers) -> None:
    parser = subparsers.add_parser("zoo", help="every detector family trained at one budget on the hard shapes set")
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "zoo" / "shapes_hard.yaml")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="subset of rows (default: all, in table order)")
    parser.add_argument("--seeds", type=int, help="training seeds per row (default 2; 1 with --quick)")
    parser.add_argument("--steps", type=int, help=f"optimizer steps of every run (default {ZOO_STEPS}; 2 with --quick)")
    parser.add_argument("--jobs", type=int, default=2, help="trainings at once (default 2)")
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of each training (default: cores // jobs)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke check: 8 train / 4 val 64-px images, 2 steps, 1 seed, trained in this process",
    )
    parser.add_argument("--output-dir", type=Path, help="run directories (default outputs/zoo; outputs/zoo_quick)")
    parser.add_argument("--output", type=Path, help="also write the table to this .md file and the figures to .json")
    parser.set_defaults(run=run_zoo)


def run_zoo(args: argparse.Namespace) -> int:
    from sasa_det.analysis.zoo_benchmark import QUICK_OVERRIDES, ZooSettings, format_zoo_table
    from sasa_det.analysis.zoo_benchmark import run_zoo as train_zoo
    from sasa_det.analysis.zoo_rows import ZOO_ROWS

    _check_cases(args.rows, [argparse.Namespace(name=row) for row in ZOO_ROWS])
    output_root = args.output_dir or Path("outputs") / ("zoo_quick" if args.quick else "zoo")
    extra = [*QUICK_OVERRIDES, f"data.shapes.root={output_root / 'shapes'}"] if args.quick else []
    settings = ZooSettings(
        config=args.config,
        output_root=output_root,
        train_command=None if args.quick else [sys.executable, str(REPO / "tools" / "train.py")],
        rows=args.rows or list(ZOO_ROWS),
        seeds=args.seeds or (1 if args.quick else 2),
        steps=args.steps or (2 if args.quick else ZOO_STEPS),
        jobs=args.jobs,
        threads=args.threads,
        extra_overrides=extra,
    )
    results = train_zoo(settings, progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = format_zoo_table(results)
    print(table)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".md").write_text(table + "\n")
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=2))
    failed = sum("error" in run for row in results["rows"] for run in row["runs"].values())
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_layers_parser(subparsers)
    add_model_parser(subparsers)
    add_eval_parser(subparsers)
    add_data_parser(subparsers)
    add_kernels_parser(subparsers)
    add_finetune_parser(subparsers)
    add_all_parser(subparsers)
    add_zoo_parser(subparsers)
    args = parser.parse_args(argv)
    from sasa_det.logging_setup import configure_logging

    configure_logging()
    return args.run(args)


if __name__ == "__main__":
    run_tool(main)
