"""Every option of every config group composes and instantiates."""

from pathlib import Path

import pytest
import torch
from hydra._internal.utils import _locate
from omegaconf import OmegaConf

from mtlssl.config import check_config_targets, config_dir, instantiate
from mtlssl.data.build import build_data
from mtlssl.engine.runtime import Runtime
from mtlssl.errors import UserError
from mtlssl.models.backbones.build import build_backbone
from mtlssl.stages.train_mtl import build_weighting
from mtlssl.weighting.base import LossWeighting
from tests.conftest import TINY, compose_config, tiny

CONF = config_dir()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("name", ["pretrain", "train_mtl", "eval", "pipeline"])
def test_primary_configs_compose(name: str) -> None:
    cfg = compose_config(name, ["ckpt=x.pt"] if name == "eval" else [])
    assert cfg.seed == 0 and cfg.device == "auto"


@pytest.mark.parametrize("option", options("encoder"))
def test_every_encoder_builds_and_maps_images_to_features(option: str) -> None:
    cfg = compose_config("train_mtl", [f"encoder={option}", "data.cache_dir=null"])
    encoder = build_backbone(cfg.encoder.arch).eval()
    with torch.no_grad():
        maps = encoder.feature_maps(torch.rand(2, 3, 32, 32))
        features = encoder(torch.rand(2, 3, 32, 32))
    # every stage's map has the channels and stride the backbone declares; the last one's pool is the feature
    assert [m.shape[1:] for m in maps] == [(c, 32 // s, 32 // s) for c, s in zip(encoder.stage_channels,
                                                                                 encoder.stage_strides, strict=True)]
    assert maps[-1].shape[1] == encoder.out_dim and features.shape == (2, encoder.out_dim)


def test_cifar_stem_keeps_resolution() -> None:
    plain = compose_config("train_mtl", ["encoder=resnet18"])
    stem = compose_config("train_mtl", ["encoder=resnet18", "encoder.arch.cifar_stem=true"])
    x = torch.rand(1, 3, 32, 32)
    assert build_backbone(plain.encoder.arch).eval().feature_maps(x)[-1].shape[-1] == 1
    assert build_backbone(stem.encoder.arch).eval().feature_maps(x)[-1].shape[-1] == 4


@pytest.mark.parametrize("option", options("augmentation"))
def test_every_augmentation_builds_and_keeps_the_shape(option: str) -> None:
    augment = instantiate(compose_config("pretrain", [f"augmentation={option}"]).augmentation, "augmentation")
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, 16, 16) and out.dtype == torch.float32


@pytest.mark.parametrize("option", options("weighting"))
@pytest.mark.parametrize("grad_space", ["params", "features"])
def test_every_weighting_builds_with_the_engine_options(option: str, grad_space: str) -> None:
    extra = ["weighting.weights=[1,1,1,1,1]"] if option == "static" else []
    cfg = compose_config("train_mtl", [f"weighting={option}", f"weighting.grad_space={grad_space}", *extra])
    method, options = build_weighting(cfg, 5, Runtime.create("cpu", "32", False))
    assert options.grad_space == grad_space
    if isinstance(method, LossWeighting):
        assert method.combine(torch.ones(5)).dim() == 0
    else:
        assert method.aggregate(torch.randn(5, 7), torch.ones(5)).shape == (7,)


@pytest.mark.parametrize("option", options("heads"))
def test_every_head_builds(option: str) -> None:
    head = instantiate(compose_config("train_mtl", [f"heads={option}"]).heads, "heads")(in_dim=8, out_dim=3)
    assert head.eval()(torch.randn(2, 8)).shape == (2, 3)


@pytest.mark.parametrize("optim", options("optim"))
@pytest.mark.parametrize("sched", options("sched"))
def test_every_optimizer_and_schedule_builds(optim: str, sched: str) -> None:
    cfg = compose_config("train_mtl", [f"optim={optim}", f"sched={sched}"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optim, "optim")([{"params": params}])
    scheduler = instantiate(cfg.sched, "sched")(optimizer, total_steps=10, steps_per_epoch=5)
    optimizer.step()
    scheduler.step()
    assert optimizer.param_groups[0]["lr"] > 0


def test_the_embedded_dataset_builds_with_its_tasks() -> None:
    data = build_data(compose_config("train_mtl", TINY).data)
    assert data.tasks and {"unlabeled", "train", "val", "test"} <= data.splits.keys()
    for split in ("train", "val", "test"):
        assert {t.name for t in data.tasks} <= data.splits[split].targets.keys()


@pytest.mark.parametrize("option", options("data"))
def test_every_dataset_option_composes_and_names_a_builder(option: str) -> None:
    """On-disk datasets are built from tiny files in their real format by their own tests (tests/data/)."""
    cfg = compose_config("train_mtl", [f"data={option}"])
    assert callable(_locate(cfg.data._target_))
    assert cfg.data.channels in (1, 3) and len(cfg.data.mean) == len(cfg.data.std) == cfg.data.channels


@pytest.mark.parametrize("option", options("ssl"))
def test_every_ssl_method_builds(option: str) -> None:
    method = instantiate(compose_config("pretrain", [f"ssl={option}"]).ssl, "ssl", in_dim=8)
    assert method.loss(torch.randn(6, 8)).dim() == 0


def test_config_groups_mirror_the_package() -> None:
    """A group option names code under mtlssl/ that exists (weighting/equal.yaml -> mtlssl/weighting/equal.py)."""
    package = Path(__file__).resolve().parents[1] / "mtlssl"
    for yaml in CONF.rglob("*.yaml"):
        target = OmegaConf.load(yaml).get("_target_") if "hydra" not in yaml.parts else None
        if target and target.startswith("mtlssl."):
            module = package.joinpath(*target.split(".")[1:-1]).with_suffix(".py")
            assert module.is_file(), f"{yaml} names {target}"


def test_untrusted_targets_are_refused() -> None:
    node = OmegaConf.create({"_target_": "os.system", "command": "echo pwned"})
    with pytest.raises(UserError, match="not allowed"):
        instantiate(node, "data")


# --- only the registered builders of a node's own group can be built, however the target is written ----------


def payload(marker: Path) -> str:
    """A torch callable that creates ``marker`` when called: proof of whether a target ran."""
    return f"{{_target_:torch.save,_args_:[[1],'{marker}']}}"


@pytest.mark.parametrize("overrides,group,message", [
    (["optim._target_=torch.hub.load"], "optim", "optim._target_=torch.hub.load is not allowed: optim may only name "
                                                 "mtlssl.engine.lars.LARS, torch.optim.AdamW, torch.optim.SGD"),
    (["optim._target_=torch.utils.cpp_extension.load_inline"], "optim", "optim may only name"),
    (["optim._target_=mtlssl.data.shapes.shapes"], "optim", "is not allowed"),  # a builder, but of another group
    (["sched._target_=torch.optim.SGD"], "sched", "sched may only name mtlssl.engine.optim.constant, "
                                                  "mtlssl.engine.optim.cosine"),
    (["+data.extra={payload}"], "data", "data.extra._target_=torch.save is not allowed: data may only name"),
    (["+data._args_=[{payload}]"], "data", "data._args_[0]._target_=torch.save is not allowed"),
    (["+heads.nested={{inner:{{deeper:[{payload}]}}}}"], "heads", "heads.nested.inner.deeper[0]._target_=torch.save"),
    (["weighting._target_=torch.save", "+weighting._partial_=true", "+weighting._args_=[[1],{marker}]"], "weighting",
     "weighting._target_=torch.save is not allowed"),
    (["+evil={payload}", "+augmentation.extra=${{evil}}"], "augmentation", "augmentation.extra._target_=torch.save"),
    (["+name=torch.save", "data._target_=${{name}}"], "data", "data._target_=torch.save is not allowed"),
    (["+data.extra={{_target_:'${{oc.env:MTLSSL_TEST_TARGET}}',_args_:[[1],'{marker}']}}"], "data",
     "data.extra._target_=torch.save is not allowed"),
    (["+data.extra={{_target_:'${{oc.decode:${{oc.env:MTLSSL_TEST_NODE}}}}'}}"], "data",
     "data.extra._target_={'_target_': 'torch.save'"),  # a mapping: no builder's name
    (["+data.extra='${{oc.decode:${{oc.env:MTLSSL_TEST_NODE}}}}'"], "data", "data.extra._target_=torch.save"),
    (["+evil={payload}", "+data.extra=${{oc.env:MTLSSL_TEST_AGAIN}}"], "data",
     "data.extra='${evil}' is still an interpolation once resolved"),
    (["+data.extra={{_target_:'${{oc.env:MTLSSL_TEST_UNSET}}'}}"], "data", "data does not resolve"),
    (["+data.extra={{_target_:'${{missing.key}}'}}"], "data", "data does not resolve"),
], ids=["torch.hub.load", "load_inline", "another_groups_builder", "an_optimizer_as_schedule", "nested", "args",
        "deeply_nested_list", "partial", "node_interpolation", "key_interpolation", "env_target", "decoded_target",
        "decoded_node", "interpolation_resolving_to_an_interpolation", "unset_env", "missing_key"])
def test_a_target_outside_its_groups_builders_never_runs(overrides: list[str], group: str, message: str,
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MTLSSL_TEST_TARGET", "torch.save")
    monkeypatch.setenv("MTLSSL_TEST_NODE", f"{{_target_: torch.save, _args_: [[1], '{marker}']}}")
    monkeypatch.setenv("MTLSSL_TEST_AGAIN", "${evil}")
    monkeypatch.delenv("MTLSSL_TEST_UNSET", raising=False)
    cfg = compose_config("train_mtl", [o.format(payload=payload(marker), marker=marker) for o in overrides])
    with pytest.raises(UserError) as err:
        instantiate(cfg[group], group, num_tasks=2) if group == "weighting" else instantiate(cfg[group], group)
    assert message in str(err.value)
    with pytest.raises(UserError):  # a stage's first check of its whole config refuses it too
        check_config_targets(cfg)
    assert not marker.exists()


def test_a_refusal_names_where_a_stored_config_came_from() -> None:
    with pytest.raises(UserError, match=r"^data._target_=torch.hub.load is not allowed \(in the config stored in "
                                        r"'x.pt'\): data may only name mtlssl.data.celeba.celeba, "):
        instantiate({"_target_": "torch.hub.load"}, "data", "the config stored in 'x.pt'")


def test_the_whole_config_is_checked_group_by_group() -> None:
    check_config_targets(compose_config("pipeline"))  # every shipped target, pipeline sections included
    with pytest.raises(UserError, match=r"train_mtl.optim._target_=torch.save is not allowed: optim may only name"):
        check_config_targets(compose_config("pipeline", ["train_mtl.optim._target_=torch.save"]))
    with pytest.raises(UserError, match=r"trainer.hook._target_=mtlssl.data.shapes.shapes: no builder may be named "
                                        r"there; only the nodes of data, encoder.arch"):
        check_config_targets(compose_config("train_mtl", ["+trainer.hook={_target_:mtlssl.data.shapes.shapes}"]))


def test_tiny_configs_compose_for_every_stage() -> None:
    for name in ("pretrain", "train_mtl", "pipeline"):
        assert tiny(name).data.n_train == 64


def test_sweep_subdirectories_are_readable_unique_and_short() -> None:
    from mtlssl.config import MAX_DIRNAME, sweep_subdir

    assert sweep_subdir("weighting=pcgrad,tasks=[a]", 2) == "weighting=pcgrad,tasks=[a]/seed=2"
    assert sweep_subdir("", 0) == "default/seed=0"  # never an absolute "/seed=0"
    assert sweep_subdir("encoder.init=/runs/x", 0) == "encoder.init=_runs_x/seed=0"
    long_a, long_b = "x" * 300 + "a", "x" * 300 + "b"
    assert len(sweep_subdir(long_a, 0).split("/")[0]) == MAX_DIRNAME
    assert sweep_subdir(long_a, 0) != sweep_subdir(long_b, 0)
