"""CelebA through torchvision's loader, on a tiny fake folder in the real file formats.

torchvision's ``CelebA._check_integrity`` compares the md5 of the five text files with the official ones,
which tiny fake files cannot match; the ``fake_md5`` fixture replaces it with a check that the same files
exist (and one test keeps the real check, to see its failure become a clear UserError).
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from torchvision.datasets import CelebA

import mtlssl.data.imagefolder as files
from mtlssl.config import config_dir
from mtlssl.data.celeba import celeba
from mtlssl.errors import UserError

NAMES = ("5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
         "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
         "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
         "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
         "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
PARTITION = [0, 0, 1, 0, 2, 0, 1, 2, 0, 0]  # 0 train, 1 valid, 2 test (torchvision needs >= 2 per split)
N, SIZE = len(PARTITION), 8
TRAIN, VAL, TEST = ([i for i, p in enumerate(PARTITION) if p == k] for k in range(3))


def attr(i: int, j: int) -> int:
    """The fake value (-1 or 1, as in the real file) of attribute j for image i."""
    return 1 if (i * 7 + j * 3) % 5 < 2 else -1


def red(i: int) -> int:
    return 20 + 20 * i


def filename(i: int) -> str:
    return f"{i + 1:06d}.jpg"


def _table(path: Path, header: str | None, rows: list[str]) -> None:
    """A CelebA text file: with a header, a count line first (as the real files)."""
    lines = ([str(len(rows)), header] if header is not None else []) + rows
    path.write_text("\n".join(lines) + "\n")


def make_fake_celeba(root: Path) -> Path:
    """<root>/celeba with the six things torchvision reads; images are 178x218 like the aligned faces."""
    base = root / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    for i in range(N):
        Image.new("RGB", (178, 218), (red(i), 90, 160)).save(base / "img_align_celeba" / filename(i), quality=95)
    # the real header line ends with a space, and values are right-aligned in width 2
    _table(base / "list_attr_celeba.txt", " ".join(NAMES) + " ",
           [filename(i) + " " + " ".join(f"{attr(i, j):>2}" for j in range(len(NAMES))) for i in range(N)])
    _table(base / "list_eval_partition.txt", None, [f"{filename(i)} {p}" for i, p in enumerate(PARTITION)])
    _table(base / "identity_CelebA.txt", None, [f"{filename(i)} {100 + i}" for i in range(N)])
    _table(base / "list_bbox_celeba.txt", "image_id x_1 y_1 width height",
           [f"{filename(i)}    95  71 226 313" for i in range(N)])
    landmarks = ("lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x "
                 "rightmouth_y")
    _table(base / "list_landmarks_align_celeba.txt", landmarks,
           [f"{filename(i)}  69  109  106  113   77  142   73  152  108  154" for i in range(N)])
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_fake_celeba(tmp_path / "data")


@pytest.fixture
def fake_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """The integrity check minus the md5 comparison: the text files and the image folder must exist."""
    def exists(self: CelebA) -> bool:
        base = os.path.join(self.root, self.base_folder)
        needed = [f for _, _, f in self.file_list if not f.endswith((".zip", ".7z"))]
        return all(os.path.isfile(os.path.join(base, f)) for f in needed) and os.path.isdir(
            os.path.join(base, "img_align_celeba"))

    monkeypatch.setattr(CelebA, "_check_integrity", exists)


def build(root: Path, **kwargs: object):
    return celeba(str(root), **{"size": SIZE, "cache_dir": None, "num_workers": 0, **kwargs})  # type: ignore[arg-type]


def reds(images: torch.Tensor) -> list[int]:
    return images[:, 0].float().mean(dim=(1, 2)).round().long().tolist()


@pytest.mark.usefixtures("fake_md5")
def test_forty_binary_tasks_and_the_official_splits(root: Path) -> None:
    data = build(root)
    assert [t.name for t in data.tasks] == NAMES
    assert all(t.kind == "binary" and t.num_outputs == 1 for t in data.tasks)
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 6, "val": 2, "test": 2, "unlabeled": 6}
    for split, rows in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        part = data.splits[split]
        assert part.images.shape == (len(rows), 3, SIZE, SIZE) and part.images.dtype == torch.uint8
        assert all(abs(a - red(i)) <= 3 for a, i in zip(reds(part.images), rows, strict=True))  # JPEG: near
        for j, name in enumerate(NAMES):
            target = part.targets[name]
            assert target.shape == (len(rows), 1) and target.dtype == torch.float32
            assert target[:, 0].tolist() == [(attr(i, j) + 1) / 2 for i in rows]  # -1/1 -> 0/1
    assert data.splits["unlabeled"].targets == {}
    assert data.mean == (0.485, 0.456, 0.406)


@pytest.mark.usefixtures("fake_md5")
def test_attribute_subset(root: Path) -> None:
    data = build(root, attributes=["Smiling", "Male", "5_o_Clock_Shadow"])
    assert [t.name for t in data.tasks] == ["Smiling", "Male", "5_o_Clock_Shadow"]
    assert set(data.splits["val"].targets) == {"Smiling", "Male", "5_o_Clock_Shadow"}
    smiling = NAMES.index("Smiling")
    assert data.splits["val"].targets["Smiling"][:, 0].tolist() == [(attr(i, smiling) + 1) / 2 for i in VAL]
    with pytest.raises(UserError, match=r"unknown attribute\(s\) \['Smiley'\].*Smiling"):
        build(root, attributes=["Smiley"])
    with pytest.raises(UserError, match="names an attribute twice"):
        build(root, attributes=["Male", "Male"])


@pytest.mark.usefixtures("fake_md5")
def test_subsets_are_deterministic_and_train_is_inside_the_pool(root: Path) -> None:
    a = build(root, n_unlabeled=4, n_train=2, n_val=1)
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 2, "val": 1, "test": 2, "unlabeled": 4}
    pool = reds(a.splits["unlabeled"].images)
    assert set(reds(a.splits["train"].images)) <= set(pool)
    b = build(root, n_unlabeled=4, n_train=2, n_val=1)
    assert all(torch.equal(a.splits[s].images, b.splits[s].images) for s in a.splits)
    assert torch.equal(a.splits["train"].targets["Young"], b.splits["train"].targets["Young"])


@pytest.mark.usefixtures("fake_md5")
def test_cache_round_trip(root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    first = build(root, cache_dir=str(cache), num_workers=2)
    assert len(list(cache.glob("celeba-*.pt"))) == 3  # one per official split
    monkeypatch.setattr(files, "decode_files", lambda *a, **k: pytest.fail("decoded instead of using the cache"))
    second = build(root, cache_dir=str(cache))
    assert all(torch.equal(first.splits[s].images, second.splits[s].images) for s in first.splits)


def test_fake_files_fail_the_real_md5_check_with_a_fetch_hint(root: Path) -> None:
    with pytest.raises(UserError, match="list_attr_celeba.txt.*data.root") as err:
        build(root)
    assert "download is off" in str(err.value)


@pytest.mark.usefixtures("fake_md5")
def test_missing_files(tmp_path: Path, root: Path) -> None:
    with pytest.raises(UserError, match="files are missing or unreadable"):
        build(tmp_path / "empty")
    (root / "celeba" / "img_align_celeba" / filename(TEST[0])).unlink()
    with pytest.raises(UserError, match=f"celeba split 'test'.*{filename(TEST[0])}"):
        build(root)


@pytest.mark.usefixtures("fake_md5")
@pytest.mark.parametrize("into", [VAL[0], TEST[0], TRAIN[1]], ids=["val", "test", "train"])
def test_an_image_linked_into_another_place_is_refused(root: Path, into: int) -> None:
    faces = root / "celeba" / "img_align_celeba"
    (faces / filename(into)).unlink()
    (faces / filename(into)).symlink_to(faces / filename(TRAIN[0]))
    with pytest.raises(UserError, match="is the same file as") as err:
        build(root)
    assert filename(into) in str(err.value) and filename(TRAIN[0]) in str(err.value)


@pytest.mark.usefixtures("fake_md5")
def test_conf_instantiates(root: Path) -> None:
    cfg = OmegaConf.load(config_dir() / "data" / "celeba.yaml")
    data = hydra.utils.instantiate(cfg, root=str(root), size=SIZE, cache_dir=None, attributes=["Smiling", "Young"])
    assert data.name == "celeba" and [t.name for t in data.tasks] == ["Smiling", "Young"]
    assert len(data.splits["train"]) == 6
