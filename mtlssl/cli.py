"""The umbrella command: ``mtlssl <stage> [hydra overrides]``.

Each stage is its own Hydra app (so -m, --cfg, --help, launchers and sweepers all work); this only
dispatches. The per-stage scripts (mtlssl-pretrain, ...) do the same and keep Hydra's tab completion.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

STAGES = {
    "pretrain": ("mtlssl.stages.pretrain", "self-supervised pretraining of the encoder (SimCLR)"),
    "train-mtl": ("mtlssl.stages.train_mtl", "multi-task training of a shared encoder with one head per task"),
    "eval": ("mtlssl.stages.evaluate", "per-task metrics of an mtl checkpoint; linear probe and kNN of an encoder"),
    "pipeline": ("mtlssl.stages.pipeline", "pretrain -> train-mtl -> eval, beside a scratch-encoder baseline"),
}

USAGE = """usage: mtlssl <stage> [hydra overrides]     (mtlssl <stage> --help for a stage's options)
       mtlssl summarize <dir> [<dir> ...] [--out DIR] [--split test]
       mtlssl reproduce <run_dir> [--out DIR]
       mtlssl export <run_dir or .pt> --out DIR

stages:
{stages}
  summarize  mean ± std over seeds of the runs in sweep directories, delta_m/delta_p, average ranks
  reproduce  rerun a run from its recorded overrides (and configs at its commit); compare the metrics
  export     write a trained model as safetensors (the encoder with torchvision's key names for ResNets)

examples:
  mtlssl pipeline
  mtlssl pretrain trainer.epochs=20
  mtlssl train-mtl encoder.init=outputs/pretrain/<date>/<time> weighting=uncertainty
  mtlssl train-mtl -m weighting=equal,uncertainty seed=0,1,2
  mtlssl eval ckpt=outputs/train_mtl/<date>/<time>
  mtlssl summarize outputs/train_mtl/sweeps/<name>
  mtlssl reproduce outputs/train_mtl/<date>/<time>
  mtlssl export outputs/train_mtl/<date>/<time> --out exported/
  python -m mtlssl pipeline
"""


# The Hydra plugin each preset needs (by group, then choice; None: any choice), and the extra that installs it.
SUBMITIT = ("hydra_plugins.hydra_submitit_launcher", "launchers")
PLUGINS = {
    "launcher": {"joblib": ("hydra_plugins.hydra_joblib_launcher", "launchers"), "slurm": SUBMITIT,
                 "submitit_local": SUBMITIT},
    "hparams_search": {None: ("hydra_plugins.hydra_optuna_sweeper", "optuna")},
}


def missing_plugin(overrides: list[str]) -> str | None:
    """A message when an override picks a launcher or search preset whose Hydra plugin is not installed
    (Hydra itself would only say it "could not find" the config)."""
    for override in overrides:
        group, _, choice = override.partition("=")
        presets = PLUGINS.get(group.lstrip("+"), {})
        needed = presets.get(choice, presets.get(None)) if choice not in ("", "null") else None
        if needed and importlib.util.find_spec(needed[0]) is None:
            return f"{override} needs a Hydra plugin that is not installed: pip install \"mtlssl[{needed[1]}]\""
    return None


def appended_experiment(overrides: list[str]) -> str | None:
    """``+experiment=<name>`` (the form before experiments were a default group): Hydra's own error would only
    say that the key is already there."""
    for override in overrides:
        if override.startswith("+experiment="):
            return f"{override}: experiment is a config group of every stage now; write {override[1:]} (no +)"
    return None


def usage() -> str:
    return USAGE.format(stages="\n".join(f"  {name:<10} {help}" for name, (_, help) in STAGES.items()))


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        sys.exit(0 if args else 2)
    stage, rest = args[0], args[1:]
    if stage == "summarize":  # not a Hydra app: plain argparse over finished run directories
        from mtlssl.reporting.summarize import main as summarize_main

        sys.exit(summarize_main(rest))
    if stage == "reproduce":  # not a Hydra app either: it launches one as a subprocess
        from mtlssl.reproduce import main as reproduce_main

        sys.exit(reproduce_main(rest))
    if stage == "export":
        from mtlssl.api import export_main

        sys.exit(export_main(rest))
    if stage not in STAGES:
        print(f"mtlssl: unknown stage '{stage}'\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    problem = missing_plugin(rest) or appended_experiment(rest)
    if problem:
        print(f"mtlssl {stage}: error: {problem}", file=sys.stderr)
        sys.exit(2)
    sys.argv = [f"mtlssl-{stage}", *rest]
    importlib.import_module(STAGES[stage][0]).main()


if __name__ == "__main__":
    main()
