"""The builders each config group may name as its ``_target_``: exact dotted names, no prefixes.

A config (a command-line override, the config stored in a checkpoint, a run replayed by ``mtlssl reproduce``)
names the code it builds by a string. Only the names listed here can be built, each in its own group, so a
config can never call anything else (``torch.hub.load``, ``torch.utils.cpp_extension.load_inline``, ``os.system``):
``mtlssl.config.instantiate`` refuses any other ``_target_``, at any depth of the node it builds.

Names, not imports: this table imports nothing, so every layer (the leaf packages included) can use it. A new
option of a group (a dataset, a backbone, a weighting method, ...) adds its builder here; tests/test_builders.py
checks that every config option's target is listed under its group, that every name is used by a config, and
that each resolves to something callable.
"""

from __future__ import annotations

_DATASETS = ("celeba.celeba", "cifar.cifar10", "cifar.cifar100", "csv_manifest.csv", "imagefolder.imagefolder",
             "mnist.fashion_mnist", "mnist.mnist", "mnist.mnist5k", "multimnist.multimnist", "shapes.shapes",
             "stl10.stl10", "svhn.svhn")
_WEIGHTINGS = ("aligned_mtl.AlignedMTL", "cagrad.CAGrad", "db_mtl.DBMTL", "dualproj.DualProj", "dwa.DWA",
               "equal.Equal", "famo.FAMO", "gls.GLS", "graddrop.GradDrop", "gradnorm.GradNorm", "gradvac.GradVac",
               "imtl.IMTL", "imtl_g.IMTLG", "imtl_l.IMTLL", "mgda.MGDA", "nash_mtl.NashMTL", "pcgrad.PCGrad",
               "rlw.RLW", "static.Static", "stch.STCH", "uncertainty.Uncertainty", "upgrad.UPGrad")

# group (the config key whose node is built) -> the builders its _target_ may name
BUILDERS: dict[str, frozenset[str]] = {
    "data": frozenset(f"mtlssl.data.{name}" for name in _DATASETS),
    "encoder.arch": frozenset({"mtlssl.models.backbones.small_cnn.small_cnn",
                               "mtlssl.models.backbones.resnet.resnet"}),
    "heads": frozenset({"mtlssl.models.heads.linear.linear", "mtlssl.models.heads.mlp.mlp"}),
    "augmentation": frozenset({"mtlssl.augment.batch.BatchAugment"}),
    "ssl": frozenset({"mtlssl.ssl.simclr.SimCLR"}),
    "weighting": frozenset(f"mtlssl.weighting.{name}" for name in _WEIGHTINGS),
    "optim": frozenset({"torch.optim.SGD", "torch.optim.AdamW", "mtlssl.engine.lars.LARS"}),
    "sched": frozenset({"mtlssl.engine.optim.cosine", "mtlssl.engine.optim.constant"}),
    # Built by Hydra itself before a stage starts (conf/common.yaml); checked by mtlssl reproduce before a replay
    "hydra.callbacks": frozenset({"mtlssl.engine.run_dir_guard.RunDirGuard"}),
}


def group_of(path: str) -> str | None:
    """The group whose builders a ``_target_`` found under config key ``path`` may name: the first group key
    along the path (``pretrain.optim`` -> optim, a pipeline stage's section; ``data.x`` -> data, a target
    nested in the data node). None when no group is on the path (no builder may be named there)."""
    parts = path.split(".")
    for i in range(len(parts)):
        for group in BUILDERS:
            size = group.count(".") + 1
            if ".".join(parts[i:i + size]) == group:
                return group
    return None
