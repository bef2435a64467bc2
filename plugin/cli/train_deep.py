"""``hepatica train inception-svm`` (seed 004) and ``hepatica train resnet-mil`` (seed 000):
the deep MR response families. Defaults are the shipped, scaled-down recipes; training
itself lives in ``plugin.research.deep_training``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from plugin.research.deep_training import CLINICAL_004, DEFAULT_SEGMENTATION

__all__ = ["add_parsers", "run_cli"]


def _common(p: argparse.ArgumentParser, label: str) -> None:
    p.add_argument("--cohort", type=Path, required=True, help="folder with cohort.csv")
    p.add_argument("--out", type=Path, required=True, help="bundle folder to write")
    p.add_argument("--label", choices=("dcr", "orr"), default=label)
    p.add_argument("--name", default="")
    p.add_argument("--version", default="0.1.0")
    p.add_argument("--description", default="")
    p.add_argument("--holdout", type=int, default=0,
                   help="keep the last N patients out; score them through the served path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1,
                   help="processes rendering phantom inputs")
    p.add_argument("--threads", type=int, default=1, help="torch threads while training")
    p.add_argument("--phantom-seed", type=int, default=0,
                   help="the --seed the --no-images phantom cohort was written with")
    p.add_argument("--segmentation", type=Path, default=DEFAULT_SEGMENTATION,
                   help="segmentation bundle that serves the held-out patients")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--margin", type=int, default=8, help="in-plane shift range (pixels)")
    p.add_argument("--crop", type=int, default=64, help="model input in-plane size (pixels)")
    p.add_argument("--spacing", type=float, default=2.0,
                   help="in-plane spacing of the context crop (mm), which is crop + 2 x margin "
                        "pixels wide")
    p.add_argument("--zoom-scale", type=float, default=2.0,
                   help="the model's field of view = this x the lesion diameter ...")
    p.add_argument("--zoom-min-mm", type=float, default=48.0, help="... at least this ...")
    p.add_argument("--zoom-max-mm", type=float, default=150.0, help="... at most this")
    p.add_argument("--explain-target", choices=("predicted", "positive"), default="predicted",
                   help="the class the heatmaps give evidence for")


def add_parsers(families: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the deep families under ``hepatica train``."""
    dcr = families.add_parser(
        "inception-svm", help="seed 004: multi-sequence MRI CNN + 27 clinical -> SVM (DCR)")
    _common(dcr, "dcr")
    dcr.add_argument("--sequences", default="T2,DWI,AP,PVP,DP")
    dcr.add_argument("--clinical", default=",".join(CLINICAL_004))
    dcr.add_argument("--features", type=int, default=32, help="CNN features per sequence")
    dcr.add_argument("--folds", type=int, default=3, help="cross-fitting folds for the SVM")
    dcr.add_argument("--kernel", choices=("auto", "linear", "rbf"), default="auto")
    dcr.add_argument("--optimiser", choices=("adamw", "sgd"), default="adamw",
                     help="CNN optimiser (the study: SGD lr 0.01)")
    dcr.add_argument("--lr", type=float, default=1e-3)
    dcr.set_defaults(func=run_cli, kind="inception-svm")
    orr = families.add_parser(
        "resnet-mil", help="seed 000: four-phase MRI 2.5-D ResNet + Transformer MIL (ORR)")
    _common(orr, "orr")
    orr.set_defaults(epochs=30, crop=48, spacing=2.5, margin=6, width=8)
    orr.add_argument("--phases", default="PRE,AP,PVP,DP")
    orr.add_argument("--slices", type=int, default=9,
                     help="slices through the tumour per phase (each an instance)")
    orr.add_argument("--features", type=int, default=32, help="encoder features")
    orr.add_argument("--dim", type=int, default=32, help="Transformer width (8 heads)")
    orr.add_argument("--patience", type=int, default=5, help="early-stopping epochs")
    orr.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate")
    orr.set_defaults(func=run_cli, kind="resnet-mil")


def run_training(args: argparse.Namespace, progress: Any) -> dict[str, Any]:
    from plugin.research import deep_training

    args.segmentation = Path(args.segmentation).resolve()
    if args.kind == "inception-svm":
        return deep_training.train_inception_svm(args, progress)
    if args.kind == "resnet-mil":
        return deep_training.train_resnet_mil(args, progress)
    raise ValueError(f"unknown family {args.kind}")


def run_cli(args: argparse.Namespace) -> int:
    """Progress lines, training, then the recorded metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    last: dict[str, str] = {}

    def progress(what: str, done: int, total: int) -> None:
        if last.get("what") != what or done == total:
            console.print(f"{what} {done}/{total}")
            last["what"] = what

    document = run_training(args, progress)
    table = Table(title=f"{document['name']} {document['version']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in document["training"].items():
        if isinstance(value, float | int | str) and not isinstance(value, bool):
            table.add_row(key, str(value))
    console.print(table)
    console.print(f"bundle written to {args.out}")
    return 0
