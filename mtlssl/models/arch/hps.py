"""Hard parameter sharing: one backbone shared by every task, one head per task on its pooled features."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import OmegaConf
from torch import Tensor, nn

from mtlssl.config import instantiate
from mtlssl.io import refuse_unfit_states
from mtlssl.models.arch.base import MTLOutput, MultiTaskArchitecture
from mtlssl.models.backbones.base import Backbone
from mtlssl.models.backbones.build import build_backbone
from mtlssl.tasks import TaskSpec

HeadFactory = Callable[..., nn.Module]


class HardSharing(MultiTaskArchitecture):
    """``shared`` is the backbone's pooled features [B, D], what every head reads (and what feature-space
    gradient methods such as MGDA-UB differentiate). With no tasks it is a backbone alone (pretraining).

    ``backbone_spec`` and ``head_spec`` are the configs that built the parts (kept for ``spec``)."""

    def __init__(self, backbone: Backbone, tasks: Sequence[TaskSpec], head: HeadFactory | None,
                 backbone_spec: dict[str, Any], head_spec: dict[str, Any] | None) -> None:
        super().__init__(())
        self.backbone = backbone
        self.head_factory, self.backbone_spec, self.head_spec = head, backbone_spec, head_spec
        self.heads = nn.ModuleDict()
        # e.g. resuming after tasks= or heads= changed: one clear message instead of torch's key listing
        refuse_unfit_states(self.heads, "task heads", "use the tasks= and heads= it was trained with (that run's "
                            "resolved_config.yaml), or start over in a new hydra.run.dir")
        self.add_tasks(tasks)

    def add_tasks(self, specs: Sequence[TaskSpec]) -> None:
        self._check_new(specs)
        if specs and self.head_factory is None:
            raise ValueError("HardSharing without a head factory cannot hold tasks")
        for spec in specs:
            self.heads[spec.name] = self.head_factory(in_dim=self.backbone.out_dim, out_dim=spec.num_outputs)
        self.tasks.extend(specs)

    def forward(self, images: Tensor, tasks: Sequence[str] | None = None) -> MTLOutput:
        features = self.backbone(images)
        names = self.task_names if tasks is None else tasks
        return MTLOutput({name: self.heads[name](features) for name in names}, shared=features)

    def shared_modules(self) -> list[nn.Module]:
        return [self.backbone]

    def task_parameters(self, name: str) -> list[nn.Parameter]:
        return list(self.heads[name].parameters())

    def spec(self) -> dict[str, Any]:
        return {"arch": "hps", "backbone": self.backbone_spec, "head": self.head_spec,
                "tasks": [t.as_dict() for t in self.tasks]}

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> HardSharing:
        backbone = build_backbone(spec["backbone"])  # first: the parameters are drawn in a fixed order
        head = instantiate(OmegaConf.create(spec["head"]), "heads") if spec.get("head") else None
        return cls(backbone, [TaskSpec(**t) for t in spec["tasks"]], head, spec["backbone"], spec.get("head"))
