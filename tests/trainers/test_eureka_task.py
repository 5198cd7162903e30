"""The Eureka token and image tasks: label rule, class balance, the knobs, and the local image loaders."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.eureka import N_CLASSES, TaskConfig, TokenTask, build_task, indicators_match
from trainers.images import ImageSplit, ImageTask, load_digits_split, load_idx, load_image_folder, load_source

pytestmark = pytest.mark.numeric  # run again under other CPU code paths by `make test`

N = 20_000


def decode(task: TokenTask, inputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Token ids back to roles and values; roles come from the vocabulary, so this also works when shuffled."""
    S = task.config.synonyms
    content = inputs[:, 1:]  # (n, 4)
    is_indicator = content >= task.first_indicator
    assert bool((is_indicator.sum(1) == 2).all())
    values = torch.where(is_indicator, (content - task.first_indicator) // S, content // S)  # (n, 4)
    # first indicator / first target in reading order: A before B and T1 before T2 in every variant
    ind = values[is_indicator].view(-1, 2)
    tgt = values[~is_indicator].view(-1, 2)
    return {"a": ind[:, 0], "b": ind[:, 1], "t1": tgt[:, 0], "t2": tgt[:, 1]}


@pytest.mark.parametrize(
    "knobs",
    [{}, {"synonyms": 1}, {"indicator_groups": True}, {"shuffle_positions": True}, {"p_match": 0.8, "synonyms": 5}],
)
def test_token_labels_follow_the_rule(knobs: dict) -> None:
    task = TokenTask(TaskConfig(**knobs), width=8)
    batch = task.sample(N, torch.Generator().manual_seed(0))
    v = decode(task, batch.inputs)
    match = indicators_match(v["a"], v["b"], task.config.indicator_groups)
    torch.testing.assert_close(batch.labels, torch.where(match, v["t1"], v["t2"]))
    assert bool((batch.inputs[:, 0] == task.cls).all())
    assert float(match.float().mean()) == pytest.approx(task.config.p_match, abs=0.015)


def test_token_classes_are_balanced_and_always_answering_t1_is_the_55_percent_plateau() -> None:
    task = TokenTask(TaskConfig(), width=8)
    batch = task.sample(N, torch.Generator().manual_seed(1))
    freq = torch.bincount(batch.labels, minlength=N_CLASSES).float() / N
    assert float(freq.min()) > 0.085 and float(freq.max()) < 0.115
    v = decode(task, batch.inputs)
    assert float((v["t1"] == batch.labels).float().mean()) == pytest.approx(0.55, abs=0.012)
    # every synonym of every symbol is used
    assert len(torch.unique(batch.inputs[:, 1:])) == task.vocab_size - 1


def test_indicator_groups_use_four_values_and_match_by_group() -> None:
    task = TokenTask(TaskConfig(indicator_groups=True), width=8)
    v = decode(task, task.sample(N, torch.Generator().manual_seed(2)).inputs)
    assert sorted(torch.unique(v["a"]).tolist()) == [0, 1, 2, 3]
    same_group = (v["a"] // 2) == (v["b"] // 2)
    # matching pairs are not only identical values: (1,2) and (3,4) count as matches too
    assert float(((v["a"] != v["b"]) & same_group).float().mean()) > 0.2


def test_shuffle_positions_swaps_each_pair_half_of_the_time_and_only_within_the_pair() -> None:
    task = TokenTask(TaskConfig(shuffle_positions=True), width=8)
    inputs = task.sample(N, torch.Generator().manual_seed(3)).inputs
    ind = inputs >= task.first_indicator
    assert float(ind[:, 1].float().mean()) == pytest.approx(0.5, abs=0.02)  # A first in the first pair
    assert float(ind[:, 4].float().mean()) == pytest.approx(0.5, abs=0.02)  # B last in the second pair
    assert bool(((ind[:, 1] ^ ind[:, 2]) & (ind[:, 3] ^ ind[:, 4])).all())  # one indicator per pair
    fixed = TokenTask(TaskConfig(), width=8).sample(100, torch.Generator().manual_seed(3)).inputs
    assert bool((fixed[:, [1, 4]] >= task.first_indicator).all())


def test_embedding_noise_is_drawn_from_the_data_stream() -> None:
    task = TokenTask(TaskConfig(embed_noise=0.5), width=8)
    first = task.sample(1000, torch.Generator().manual_seed(4))
    again = task.sample(1000, torch.Generator().manual_seed(4))
    assert first.noise is not None and first.noise.shape == (1000, 5, 8)
    assert float(first.noise.std()) == pytest.approx(0.5, rel=0.05)
    torch.testing.assert_close(first.noise, again.noise)
    assert TokenTask(TaskConfig(), width=8).sample(10, torch.Generator()).noise is None


# ---- images --------------------------------------------------------------------------------------------------------


def labelled_tiles(n_per_class: int, tile: int) -> ImageSplit:
    """Tiles whose every pixel is (label + 1) / 20: the label can be read back from any pixel."""
    labels = torch.arange(10).repeat_interleave(n_per_class)
    images = ((labels.float() + 1) / 20).view(-1, 1, 1).expand(-1, tile, tile).clone()
    return ImageSplit(images, labels)


def test_image_labels_follow_the_rule_on_readable_tiles() -> None:
    tiles = labelled_tiles(5, 4)
    task = ImageTask(tiles, tiles, p_match=0.5)
    images, labels = task.sample(N, torch.Generator().manual_seed(0))
    assert images.shape == (N, 8, 8)
    read = (images[:, ::4, ::4] * 20).round().long() - 1  # (N, 2, 2) class of each tile
    a, t1, t2, b = read[:, 0, 0], read[:, 0, 1], read[:, 1, 0], read[:, 1, 1]
    assert set(torch.unique(torch.cat([a, b])).tolist()) == {1, 2}  # indicators are digits 1 and 2
    torch.testing.assert_close(labels, torch.where(a == b, t1, t2))
    assert float((a == b).float().mean()) == pytest.approx(0.5, abs=0.015)
    freq = torch.bincount(labels, minlength=10).float() / N
    assert float(freq.min()) > 0.085 and float(freq.max()) < 0.115


def test_bundled_digits_split_is_fixed_and_disjoint() -> None:
    train, val = load_digits_split()
    assert train.images.shape[1:] == (8, 8) and len(train.labels) + len(val.labels) == 1797
    assert float(train.images.min()) >= 0.0 and float(train.images.max()) <= 1.0
    train2, _ = load_digits_split()
    torch.testing.assert_close(train.images, train2.images)
    flat_train = {tuple(x.flatten().tolist()) for x in train.images[:300]}
    assert sum(tuple(x.flatten().tolist()) in flat_train for x in val.images) < 10  # (a few digits are duplicates)


def test_image_task_builds_the_patch_vit_input() -> None:
    task = build_task(TaskConfig(kind="images", patch_size=4), width=16)
    assert task.image_size == 16 and task.seq_len == 17
    batch = task.sample(32, torch.Generator().manual_seed(0), "val")
    assert batch.inputs.shape == (32, 16, 16)
    assert task.embedding()(batch.inputs).shape == (32, 17, 16)
    with pytest.raises(ValueError, match="patch_size 3 must divide"):
        build_task(TaskConfig(kind="images", patch_size=3), width=16).embedding()


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def fake_mnist(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x_train": rng.integers(0, 256, (n, 28, 28)), "y_train": np.arange(n) % 10,
        "x_test": rng.integers(0, 256, (n // 2, 28, 28)), "y_test": np.arange(n // 2) % 10,
    }  # fmt: skip


def test_idx_loader_reads_plain_and_gzipped_files(tmp_path: Path) -> None:
    arrays = fake_mnist(30, 0)
    names = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte",
             "x_test": "t10k-images-idx3-ubyte", "y_test": "t10k-labels-idx1-ubyte.gz"}  # fmt: skip
    for key, name in names.items():
        write_idx(tmp_path / name, arrays[key])
    np.testing.assert_array_equal(load_idx(tmp_path / names["x_train"]), arrays["x_train"])
    train, test = load_image_folder(tmp_path)
    assert train.images.shape == (30, 28, 28) and test.images.shape == (15, 28, 28)
    torch.testing.assert_close(train.images, torch.from_numpy(arrays["x_train"].astype(np.float32) / 255))
    torch.testing.assert_close(test.labels, torch.from_numpy(arrays["y_test"].astype(np.int64)))
    (tmp_path / "bad-idx").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an unsigned-byte idx file"):
        load_idx(tmp_path / "bad-idx")


def test_npz_loader_and_fashion_source_use_mnist_indicators(tmp_path: Path) -> None:
    (tmp_path / "mnist").mkdir()
    (tmp_path / "fashion_mnist").mkdir()
    mnist, fashion = fake_mnist(40, 1), fake_mnist(40, 2)
    np.savez(tmp_path / "mnist" / "mnist.npz", **mnist)
    np.savez(tmp_path / "fashion_mnist" / "fashion_mnist.npz", **fashion)
    (ind_train, _), (tgt_train, tgt_test) = load_source("fashion_mnist", str(tmp_path))
    torch.testing.assert_close(ind_train.images, torch.from_numpy(mnist["x_train"].astype(np.float32) / 255))
    torch.testing.assert_close(tgt_train.images, torch.from_numpy(fashion["x_train"].astype(np.float32) / 255))
    assert len(tgt_test.labels) == 20
    task = build_task(TaskConfig(kind="images", image_source="fashion_mnist", data_dir=str(tmp_path)), width=16)
    assert task.image_size == 56 and task.seq_len == 14 * 14 + 1
    with pytest.raises(ValueError, match=r"task\.data_dir"):
        load_source("mnist", "")
