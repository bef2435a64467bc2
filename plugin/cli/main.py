"""The `hepatica` command: one sub-command per job a radiology-IT user does."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from plugin import __version__

if TYPE_CHECKING:
    from plugin.node.config import HepaticaConfig

console = Console(stderr=False)
err = Console(stderr=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit status."""
    from plugin.cli import phantom as phantom_cli
    from plugin.cli import segmentation as segmentation_cli

    parser = _parser()
    args = parser.parse_args(segmentation_cli.rewrite_evaluate_segmentation(
        phantom_cli.rewrite_phantom_cohort(sys.argv[1:] if argv is None else argv)))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not args.verbose:  # the libraries' per-object INFO lines drown the node's own
        for noisy in ("highdicom", "pynetdicom"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except Exception as exc:  # the one place a CLI failure becomes a message
        if args.verbose:
            raise
        err.print(f"[red]error:[/red] {exc}")
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hepatica", description="Liver-cancer treatment-response AI as a DICOM node. "
        "RESEARCH USE ONLY — not for diagnostic use.")
    parser.add_argument("--version", action="version", version=f"hepatica {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, tracebacks")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    _add_phantom(sub)
    _add_run(sub)
    _add_serve(sub)
    _add_demo(sub)
    _add_jobs(sub)
    from plugin.cli import node as node_cli

    node_cli.add_parsers(sub)
    _add_models(sub)
    _add_train(sub)
    _add_config(sub)
    _add_bench(sub)
    from plugin.cli import evaluate as evaluate_cli

    evaluate_cli.add_parser(sub)
    from plugin.cli import segmentation as segmentation_cli

    segmentation_cli.add_evaluate_parser(sub)
    from plugin.cli import inspect as inspect_cli

    inspect_cli.add_parser(sub)
    return parser


def _add_phantom(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("phantom", help="write a synthetic liver study as DICOM with ground truth")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--modality", choices=("mr", "ct"), default="mr")
    p.add_argument("--seed", type=int, default=0)
    from plugin.cli import phantom as phantom_cli

    phantom_cli.add_phantom_options(p)
    p.set_defaults(func=phantom_cli.run_phantom)
    phantom_cli.add_cohort_parser(sub)


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("run", help="process one study folder offline (no network)")
    p.add_argument("study_dir", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from plugin.node.config import load_config
    from plugin.pipeline.prediction import ResponseSettings
    from plugin.pipeline.run import PipelineSettings, process_study

    if not args.study_dir.is_dir():
        raise FileNotFoundError(f"study folder {args.study_dir} does not exist")
    config = load_config(args.config)
    settings = PipelineSettings(config.pipeline.bundle_dirs, config.pipeline.series_number_base,
                                config.pipeline.providers,
                                # a node's data_dir when there is one (clinical/, feature cache)
                                ResponseSettings(config.data_dir if config.data_dir.is_dir()
                                                 else None),
                                phase_rules=config.pipeline.phase_rules)
    with console.status("starting…") as status:
        result = process_study(args.study_dir, args.out, settings,
                               progress=lambda step: status.update(f"{step}…"))
    print_result(result.summary, args.out)
    return 0


def print_result(summary: dict[str, object], out_dir: Path) -> None:
    """The measurements table and where the result files are."""
    measurements = summary["measurements"]
    if measurements is None:  # segmentation not run (pipeline.partial_report)
        segmentation = summary.get("segmentation")
        assert isinstance(segmentation, dict)
        console.print(f"no measurements: segmentation not run: {segmentation['reason']}")
    else:
        assert isinstance(measurements, dict)
        _print_measurements(measurements)
    timings = summary.get("timings_s", {})
    assert isinstance(timings, dict)
    console.print("timings: " + ", ".join(f"{k} {v:.2f}s" for k, v in timings.items()
                                          if "/" not in k))
    console.print(f"results in {out_dir}:", soft_wrap=True, highlight=False)
    files = summary.get("files", [])
    assert isinstance(files, list)
    for name in [*files, "summary.json"]:
        console.print(f"  {out_dir / str(name)}", soft_wrap=True, highlight=False)


def _print_measurements(measurements: dict[str, Any]) -> None:
    table = Table(title="Hepatica measurements — RESEARCH USE ONLY, not for diagnostic use")
    for column in ("lesion", "volume (ml)", "longest diameter (mm)", "viable diameter (mm)"):
        table.add_column(column, justify="right")
    for lesion in measurements["lesions"]:
        table.add_row(str(lesion["label"]), f"{lesion['volume_ml']:.2f}",
                      f"{lesion['longest_diameter_mm']:.1f}", f"{lesion['viable_diameter_mm']:.1f}")
    console.print(table)
    console.print(f"liver volume {measurements['liver_volume_ml']:.0f} ml, tumour burden "
                  f"{measurements['tumour_burden_pct']:.2f} %")


def _add_serve(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the DICOM node: listener, queue, workers, sender")
    p.add_argument("--config", type=Path, help="TOML file (default: $HEPATICA_CONFIG)")
    p.add_argument("--orthanc", metavar="URL", help="be the worker of an Orthanc running the "
                   "Hepatica plugin (its REST API, e.g. http://127.0.0.1:8042); no listener")
    p.add_argument("--queue", metavar="URL", help="run jobs on Celery workers: the Redis "
                   "broker, e.g. celery://127.0.0.1:6379/0 (default: in this process)")
    p.set_defaults(func=_serve)
    w = sub.add_parser("worker", help="a Celery worker: runs jobs a node put on the queue "
                       "(docs/scale_out.md)")
    w.add_argument("--celery", metavar="URL", required=True,
                   help="the Redis broker, e.g. redis://127.0.0.1:6379/0")
    w.add_argument("--config", type=Path, help="TOML file (default: $HEPATICA_CONFIG)")
    w.add_argument("--name", default="", help="worker name (default: host:pid)")
    w.add_argument("--pool", choices=("threads", "prefork", "solo"), default="threads")
    w.add_argument("--concurrency", type=int, help="jobs at once (default: [pipeline] workers)")
    w.add_argument("--status-port", type=int, help="port of /metrics (default: [status] port)")
    w.set_defaults(func=_worker)


def _serve(args: argparse.Namespace) -> int:
    from plugin.node.config import load_config
    from plugin.node.service import HepaticaService

    config = load_config(args.config)
    if args.queue:
        from dataclasses import replace

        config = replace(config, celery=replace(config.celery, url=args.queue))
    if args.orthanc:
        return _serve_orthanc(config, args.orthanc)
    service = HepaticaService(config)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    service.start()
    console.print(f"hepatica {service.version} listening as {config.listener.ae_title} on "
                  f"{config.listener.host}:{service.port}; results to "
                  f"{service.worker.outbox.name}", highlight=False)
    if config.celery.url:
        console.print(f"jobs go to the Celery queue {config.celery.queue!r}", highlight=False)
    if service.status is not None:
        console.print(f"status page and /metrics: {service.status.url}", highlight=False)
    service.run_forever()
    return 0


def _worker(args: argparse.Namespace) -> int:
    from plugin.node.celery_worker import run_worker
    from plugin.node.config import load_config

    return run_worker(load_config(args.config), args.celery, name=args.name, pool=args.pool,
                      concurrency=args.concurrency, status_port=args.status_port)


def _serve_orthanc(config: HepaticaConfig, url: str) -> int:
    from dataclasses import replace

    from plugin.node.orthanc_worker import OrthancWorker

    config = replace(config, orthanc=replace(config.orthanc, url=url))
    from plugin.node.status import start_status_server

    worker = OrthancWorker(config)
    signal.signal(signal.SIGTERM, _terminate)
    runner: Any = worker
    if config.celery.url:  # the plugin's jobs go to Celery workers that download from Orthanc
        from plugin.node.celery_node import CeleryDispatcher

        runner = CeleryDispatcher(config, worker.queue, worker.inbox, worker.worker, "orthanc")
    runner.start()
    status = start_status_server(config, worker.version, "orthanc-worker",
                                 heartbeat=worker.worker.heartbeat)
    console.print(f"hepatica {worker.version}: Orthanc worker for {url}, jobs in "
                  f"{config.database}" + (" → Celery" if config.celery.url else ""),
                  highlight=False)
    try:
        runner.run_forever()
    finally:
        if status is not None:
            status.stop()
    return 0


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def _add_demo(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="a synthetic MR study through the whole DICOM path")
    p.add_argument("--out", type=Path, default=Path("hepatica-demo"))
    p.add_argument("--seed", type=int, default=7)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from plugin.cli.demo import run_demo

    return run_demo(args.out, args.seed, console)


def _add_jobs(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="list the jobs and their states")
    p.add_argument("--config", type=Path)
    p.add_argument("--state", action="append", help="only jobs in this state (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_jobs)


def _jobs(args: argparse.Namespace) -> int:
    from plugin.node.config import load_config
    from plugin.node.jobs import JobQueue, JobState, format_jobs_table

    config = load_config(args.config)
    if not config.database.exists():
        console.print(f"no job database at {config.database} yet (nothing received)")
        return 0
    queue = JobQueue(config.database, pipeline_version="")
    states = [JobState(s) for s in args.state] if args.state else None
    jobs = queue.list(states)
    queue.close()
    if args.json:
        console.print_json(json.dumps([_job_json(j) for j in jobs]))
    else:
        console.print(format_jobs_table(jobs))
    return 0


def _job_json(job: object) -> dict[str, object]:
    from dataclasses import asdict, is_dataclass

    assert is_dataclass(job) and not isinstance(job, type)
    return {k: (str(v) if k == "state" else v) for k, v in asdict(job).items()}


def _add_models(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from plugin.cli import models as models_cli

    models_cli.add_parser(sub)


def _add_train(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("train", help="train a model family and write a bundle")
    families = p.add_subparsers(title="family", metavar="FAMILY")
    from plugin.cli import segmentation as segmentation_cli

    segmentation_cli.add_train_parser(families)
    from plugin.cli import train as train_cli

    train_cli.add_parsers(families)


def _add_config(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("config", help="show the effective configuration or an example file")
    p.add_argument("--config", type=Path)
    p.add_argument("--example", action="store_true", help="print a commented example file")
    p.set_defaults(func=_config)


def _config(args: argparse.Namespace) -> int:
    from plugin.node.config import default_config_toml, load_config

    if args.example:
        sys.stdout.write(default_config_toml())
        return 0
    console.print(load_config(args.config))
    return 0


def _add_bench(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("bench", help="time the pipeline per step on a phantom (as ratios)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, help="also write the figures to this file")
    p.add_argument("--end-to-end", action="store_true",
                   help="DCMTK storescu → hepatica serve → DCMTK storescp on loopback: ingest "
                        "rate against storescp, last image → results in the archive, steps")
    p.add_argument("--stable-seconds", type=float, default=None,
                   help="with --end-to-end: the node's quiet period (default: its default)")
    p.add_argument("--results-dir", type=Path, default=Path("tests/benchmarks/results"),
                   help="with --end-to-end: where the figures are kept with the machine")
    p.set_defaults(func=_bench)


def _bench(args: argparse.Namespace) -> int:
    if args.end_to_end:
        return _bench_end_to_end(args)
    from plugin.cli.bench import bench_pipeline

    with console.status("benchmarking…") as status:
        report = bench_pipeline(args.runs, args.seed,
                                progress=lambda what: status.update(what))
    table = Table(title=f"pipeline per step, median of {args.runs} runs "
                        f"(reference workload {report['reference_seconds']:.3f} s)")
    for column in ("step", "seconds", "× reference"):
        table.add_column(column, justify="right")
    medians, ratios = report["median_seconds"], report["ratio_to_reference"]
    assert isinstance(medians, dict) and isinstance(ratios, dict)
    for step, seconds in medians.items():
        table.add_row(step, f"{seconds:.3f}", f"{ratios[step]:.1f}")
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _bench_end_to_end(args: argparse.Namespace) -> int:
    from plugin.cli.bench_e2e import bench_end_to_end, write_result

    with console.status("benchmarking end to end…") as status:
        report = bench_end_to_end(args.runs, args.seed, args.stable_seconds,
                                  progress=lambda what: status.update(what))
    median = report["median"]
    table = Table(title=f"end to end on loopback, median of {args.runs} runs "
                        f"(reference workload {report['reference_seconds']:.3f} s)")
    for column in ("figure", "value", "× reference"):
        table.add_column(column, justify="right")
    table.add_row("storescp images/s", f"{median['storescp_images_per_s']:.0f}", "")
    table.add_row("hepatica images/s", f"{median['node_images_per_s']:.0f}",
                  f"ingest ratio {median['ingest_ratio']:.2f}")
    table.add_row("last image → results (s)", f"{median['last_ack_to_results_s']:.1f}",
                  f"{report['last_ack_to_results_x_reference']:.0f}")
    for step, seconds in report["step_median_seconds"].items():
        table.add_row(f"step {step} (s)", f"{seconds:.2f}",
                      f"{report['step_x_reference'][step]:.1f}")
    console.print(table)
    path = write_result(report, args.results_dir)
    console.print(f"figures kept in {path}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
