"""Every recipe in conf/experiment/ composes with its stage and runs on tiny fake data in its dataset's
real on-disk format (the writers of tests/data/), shrunk to one short epoch."""

from pathlib import Path

from mtlssl.config import config_dir
from mtlssl.stages import pipeline, pretrain, train_mtl
from tests.conftest import TINY_DATA, TINY_ENCODER, compose_config
from tests.data.test_celeba import fake_md5, make_fake_celeba  # noqa: F401 (fake_md5 is a fixture)
from tests.data.test_cifar import no_md5, write_cifar10, write_cifar100  # noqa: F401 (no_md5 is a fixture)
from tests.data.test_mnist import fake_digits, write_idx

SHORT = ["device=cpu", "trainer.epochs=1", "trainer.batch_size=8", "trainer.eval_batch_size=64"]


def write_mnist(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    write_idx(raw, "train", *fake_digits(40))
    write_idx(raw, "t10k", *fake_digits(20, offset=40))
    return root


def test_every_recipe_is_covered_here() -> None:
    recipes = {p.stem for p in (config_dir() / "experiment").glob("*.yaml")}
    assert recipes == {"shapes_default", "multimnist_mgda", "celeba_40", "cifar10_simclr", "cifar100_coarse_fine"}


def test_shapes_default(tmp_path: Path) -> None:
    shrink = [f"{stage}.{o}" for stage in ("pretrain", "train_mtl") for o in SHORT[1:]]
    cfg = compose_config("pipeline", ["experiment=shapes_default", "device=cpu", *TINY_DATA, *TINY_ENCODER, *shrink,
                                      "pretrain.ssl.hidden_dim=16", "pretrain.ssl.out_dim=8"])
    assert "eval_pretrained/test/shape/accuracy" in pipeline.run(cfg, tmp_path)


def test_multimnist_mgda(tmp_path: Path) -> None:
    root = write_mnist(tmp_path / "data")
    cfg = compose_config("train_mtl", ["experiment=multimnist_mgda", *SHORT, *TINY_ENCODER, "data.source=mnist",
                                       f"data.root={root}", "data.n_val=8", "data.cache_dir=null"])
    assert cfg.weighting.grad_space == "features" and cfg.weighting.normalization == "loss+"
    results = train_mtl.run(cfg, tmp_path / "run")
    assert {"test/left/accuracy", "test/right/accuracy"} <= results.keys()


def test_celeba_40(tmp_path: Path, fake_md5: None) -> None:  # noqa: F811
    root = make_fake_celeba(tmp_path / "data")
    cfg = compose_config("train_mtl", ["experiment=celeba_40", *SHORT, "trainer.batch_size=2", f"data.root={root}",
                                       "data.size=32", "data.cache_dir=null", "data.num_workers=0"])
    results = train_mtl.run(cfg, tmp_path / "run")
    assert sum(k.endswith("/accuracy") and k.startswith("test/") for k in results) == 40


def test_cifar10_simclr(tmp_path: Path) -> None:
    write_cifar10(tmp_path / "data")
    cfg = compose_config("pretrain", ["experiment=cifar10_simclr", *SHORT, f"data.root={tmp_path / 'data'}",
                                      "data.n_val=6", "data.cache_dir=null", "ssl.hidden_dim=16"])
    assert cfg.encoder.arch.cifar_stem and cfg.optim._target_.endswith("LARS")
    assert "knn/label" in pretrain.run(cfg, tmp_path / "run")


def test_cifar100_coarse_fine(tmp_path: Path) -> None:
    write_cifar100(tmp_path / "data")
    cfg = compose_config("train_mtl", ["experiment=cifar100_coarse_fine", *SHORT, f"data.root={tmp_path / 'data'}",
                                       "data.n_val=6", "data.cache_dir=null"])
    results = train_mtl.run(cfg, tmp_path / "run")
    assert {"test/fine/accuracy", "test/coarse/accuracy"} <= results.keys()
