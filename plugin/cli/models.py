"""`hepatica models`: the installed bundles, and `models import` of published models.

``models import nnunet`` and ``models import monai-bundle`` turn a model a site already
trusts into a bundle served by the same ONNX path as the shipped ones
(docs/importing_models.md); whatever the importer cannot carry over is refused by name.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.table import Table

console = Console()
EXIT_REFUSED = 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list the installed model bundles, or import one")
    p.add_argument("--config", type=Path)
    p.set_defaults(func=list_models)
    frameworks = p.add_subparsers(title="import", metavar="import")
    imp = frameworks.add_parser("import", help="turn a published model into a bundle")
    kinds = imp.add_subparsers(title="framework", metavar="FRAMEWORK", required=True)
    nn = kinds.add_parser("nnunet", help="a trained nnU-Net v2 model folder (dataset.json, "
                                         "plans.json, fold_*/checkpoint_final.pth)")
    nn.add_argument("model_dir", type=Path)
    _common(nn)
    nn.add_argument("--folds", default="", help="folds to use, e.g. 0,1 (default: all found)")
    nn.add_argument("--orientation", default="none", choices=["none", "RAS"],
                    help="reorient to this before inference, as the model was trained")
    nn.add_argument("--checkpoint", default="checkpoint_final.pth")
    nn.add_argument("--no-mirroring", action="store_true", help="no test-time mirroring")
    nn.add_argument("--step-size", type=float, default=None,
                    help="sliding-window step as a fraction of the patch (nnU-Net: 0.5)")
    nn.set_defaults(func=import_nnunet_cli)
    mb = kinds.add_parser("monai-bundle", help="a MONAI model-zoo bundle folder "
                                               "(configs/inference.json, models/model.pt)")
    mb.add_argument("bundle_dir", type=Path)
    _common(mb)
    mb.set_defaults(func=import_monai_cli)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="folder of the new bundle")
    p.add_argument("--labels", default=None,
                   help="Hepatica label = model label(s), e.g. liver=1,tumour=2")
    p.add_argument("--phases", default="", help="the phase of each input channel, e.g. PVP")
    p.add_argument("--name", default=None)
    p.add_argument("--version", default=None)


def _phases(text: str) -> list[str] | None:
    return [p.strip() for p in text.split(",") if p.strip()] or None


def list_models(args: argparse.Namespace) -> int:
    from plugin.node.config import load_config
    from plugin.pipeline.models import installed_bundles

    config = load_config(args.config)
    table = Table(title="Installed model bundles")
    for column in ("name", "version", "family", "inputs", "trained on", "path"):
        table.add_column(column)
    for b in installed_bundles(config.pipeline.bundle_dirs):
        inputs = ", ".join("/".join(b.inputs.accepted(p)) for p in b.inputs.phases)
        table.add_row(b.name, b.version, b.family, inputs, str(b.training.get("data", "")),
                      str(b.path))
    console.print(table)
    return 0


def import_nnunet_cli(args: argparse.Namespace) -> int:
    from inference.importers.common import ImportRefused
    from inference.importers.nnunet import import_nnunet

    try:
        out = import_nnunet(args.model_dir, args.out, labels=args.labels,
                            folds=args.folds or None, phases=_phases(args.phases),
                            name=args.name, version=args.version or "1.0.0",
                            orientation=args.orientation, checkpoint=args.checkpoint,
                            mirroring=not args.no_mirroring, step_size=args.step_size)
    except (ImportRefused, FileNotFoundError) as exc:
        console.print(f"[red]not imported:[/red] {exc}")
        return EXIT_REFUSED
    return _done(out)


def import_monai_cli(args: argparse.Namespace) -> int:
    from inference.importers.common import ImportRefused
    from inference.importers.monai_bundle import import_monai_bundle

    try:
        out = import_monai_bundle(args.bundle_dir, args.out, labels=args.labels,
                                  phases=_phases(args.phases), name=args.name,
                                  version=args.version)
    except (ImportRefused, FileNotFoundError) as exc:
        console.print(f"[red]not imported:[/red] {exc}")
        return EXIT_REFUSED
    return _done(out)


def _done(out: Path) -> int:
    from inference.bundle import load_bundle

    bundle = load_bundle(out)
    parity = bundle.training.get("onnx_max_abs_diff", "not measured")
    console.print(f"bundle {bundle.name} {bundle.version} written to {out} (ONNX vs framework "
                  f"max abs diff {parity}); add its parent folder to [pipeline] bundle_dirs")
    return 0
