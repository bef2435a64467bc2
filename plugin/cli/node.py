"""`hepatica rerun` and `hepatica resend`: act on the job database of a node, running or not.

Both only change job states in SQLite; the node (``hepatica serve``) does the work on its next
turn, so they are safe while it runs and take effect when it starts if it does not.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from rich.console import Console

from plugin.node.config import HepaticaConfig, load_config
from plugin.node.jobs import JobQueue, format_jobs_table

__all__ = ["add_parsers"]

console = Console()
_HEARTBEATS = ("node.json", "orthanc-worker.json")
_STALE_SECONDS = 60.0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("rerun", help="process a study in the node's spool again")
    p.add_argument("study_uid", metavar="STUDY_UID")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=_rerun)
    p = sub.add_parser("resend", help="deliver kept results again (a job, or every undelivered)")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("job_id", nargs="?", type=int, metavar="JOB_ID")
    which.add_argument("--all", action="store_true",
                       help="every job whose results wait for delivery (send_queued, unsent)")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=_resend)


def _rerun(args: argparse.Namespace) -> int:
    from dicom_io.spool import Spool
    from plugin.pipeline.models import installed_version

    config = load_config(args.config)
    folder = Spool(config.spool_dir).study_dir(args.study_uid)  # checks the UID
    if not folder.is_dir():
        raise FileNotFoundError(f"the spool has no study {args.study_uid} ({config.spool_dir}); "
                                "beside Orthanc, use POST /hepatica/studies/{id}/rerun")
    queue = JobQueue(config.database, installed_version(config.pipeline.bundle_dirs))
    try:
        job = queue.enqueue(args.study_uid)
    finally:
        queue.close()
    console.print(f"job {job.id}: {job.state.value} (study …{job.study_uid[-12:]})")
    _say_if_no_node(config)
    return 0


def _resend(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not config.database.exists():
        raise FileNotFoundError(f"no job database at {config.database}")
    queue = JobQueue(config.database, pipeline_version="")
    try:
        jobs = queue.resend(None if args.all else args.job_id)
    finally:
        queue.close()
    if not jobs:
        console.print("no results wait for delivery")
        return 0
    console.print(format_jobs_table(jobs))
    console.print(f"{len(jobs)} job(s) queued for delivery now")
    _say_if_no_node(config)
    return 0


def _say_if_no_node(config: HepaticaConfig) -> None:
    """The change waits for a node; say so when none has reported recently."""
    for name in _HEARTBEATS:
        try:
            beat = json.loads((config.data_dir / name).read_text())
        except (OSError, ValueError):
            continue
        if time.time() - float(beat.get("time", 0)) < _STALE_SECONDS:
            return
    console.print("no node is running on this data_dir: the next `hepatica serve` does it")

