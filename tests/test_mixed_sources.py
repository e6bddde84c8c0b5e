"""File-backed and streamed sources in one run: the seeded interleave by weight, a stream's nested
take (``size``/``subset_seed``, the class filter, ``exclude_captions``), exact resume, holdout, the
errors, and the same rows as a CSV or as a shard training to the same weights."""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

import miniature_real as mini
from clipshift.cli import main
from clipshift.data.mixture import MixedData, RowPart, buffered_shuffle, pass_rng
from clipshift.data.streamed import StreamRules, WholeStream, take_stream
from clipshift.data.shards import expand_shards
from clipshift.data.text_match import TextMatcher
from clipshift.recipes.common.training import build_training_data, check_sources, load_train_config

from kill_helpers import kill_after_first_checkpoint
from resume_helpers import where_resumed


def _rows(n: int, first: int = 0) -> RowPart:
    images = torch.arange(first, first + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).contiguous()
    return RowPart(images, [f"row {first + i}" for i in range(n)], np.arange(first, first + n))


def _drawn(data: MixedData, steps) -> list[list[str]]:
    out = []
    for step in steps:
        data.fetch(step)
        batch = data.batch(torch.arange(data.batch_size))
        out.append([f"row {int(v)}" for v in batch["images"][:, 0, 0, 0]])
    return out


def test_the_interleave_is_seeded_by_weight_and_computed_at_any_step():
    parts = [_rows(10), _rows(7, first=100)]
    data = MixedData(parts, [3, 1], samples=26, batch_size=4, seed=5, need_labels=True)
    assert len(data) == 24 and list(data.counts) == [18, 6]  # 24 = 6 steps of 4; 3:1 exactly, every epoch
    seen = _drawn(data, range(18))  # 3 epochs
    for epoch in range(3):
        rows = [int(r.split()[1]) for batch in seen[6 * epoch: 6 * epoch + 6] for r in batch]
        assert sum(r < 100 for r in rows) == 18 and sum(r >= 100 for r in rows) == 6
    first = [int(r.split()[1]) for batch in seen for r in batch if int(r.split()[1]) < 100]
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:20]) == list(range(10))  # passes: permutations
    assert first[:10] != first[10:20]  # each pass in its own order
    # a fresh object computes any step alone (resume), forwards or backwards, without replaying the others
    again = MixedData([_rows(10), _rows(7, first=100)], [3, 1], samples=26, batch_size=4, seed=5, need_labels=True)
    assert _drawn(again, [13, 2, 17]) == [seen[13], seen[2], seen[17]]
    other = MixedData([_rows(10), _rows(7, first=100)], [3, 1], samples=26, batch_size=4, seed=6, need_labels=True)
    assert _drawn(other, range(6)) != seen[:6]
    assert data.batch(torch.tensor([3, 1]))["labels"].tolist() == [int(r.split()[1]) for r in
                                                                    (seen[17][3], seen[17][1])]


def test_a_full_buffer_shuffles_like_a_permutation_of_the_rows():
    assert list(buffered_shuffle(range(50), pass_rng(1, 0, 0), None)) == \
        list(buffered_shuffle(iter(range(50)), pass_rng(1, 0, 0), 50))  # a buffer that holds them all
    small = list(buffered_shuffle(range(50), pass_rng(1, 0, 0), 5))
    assert sorted(small) == list(range(50)) and small != list(range(50))


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mixed")
    return {"captions": mini.write_imagenet_captions(root / "ic", per_class=6),
            "shards": mini.write_shards(root / "wds", per_class=10, per_shard=8),
            "classes": str(mini.write_wnid_file(root / "classes.txt", mini.WNIDS)), "root": root}


def _matcher():
    from clipshift.data.imagenet_classes import imagenet_class_names, imagenet_lemmas

    return TextMatcher(imagenet_class_names(mini.WNIDS), imagenet_lemmas(mini.WNIDS), shared_terms="ambiguous")


def _keys(take) -> list[tuple[int, int]]:
    return [(s, offset) for s, _, offset, *_ in take.located]


def test_a_streams_take_is_seeded_filtered_and_nested(real):
    rules = StreamRules(subset=True, match=_matcher().match_many)
    small, large = (take_stream(real["shards"]["urls"], n, [0, 1], rules) for n in (7, 20))
    assert _keys(small) == _keys(large)[:7]  # a smaller size with the same seed: a prefix of the larger take
    assert (_matcher().match_many([x[4] for x in large.located]) >= 0).all()  # the class filter: one class named
    assert _keys(take_stream(real["shards"]["urls"], 20, [1, 1], rules)) != _keys(large)
    assert large.summary["kept"] == 20 and "shards shuffled with subset_seed [0, 1]" in large.summary["take"]
    kitchen = take_stream(real["shards"]["urls"], 10, [0, 1], StreamRules("KITCHEN", True, None, rules.match))
    assert not any("kitchen" in x[4] for x in kitchen.located) and len(kitchen.located) == 10
    assert "not excluded by exclude_captions and passing the class filter" in kitchen.summary["take"]
    # a take of every sample is drawn, pass by pass, in the order of the stream read whole
    whole = WholeStream(expand_shards(real["shards"]["urls"]), rules, 6, 32, {})
    every = take_stream(real["shards"]["urls"], 28, [0], StreamRules(subset=True, match=rules.match), buffer=6)
    read = whole.samples(lambda n: pass_rng(0, 1, n))
    for number in range(2):
        order = every.pass_order(pass_rng(0, 1, number))
        assert [every.located[i] for i in order] == [next(read) for _ in order]


def _check(real, sources: list, **settings):
    return check_sources(load_train_config(overrides={"sources": sources, "samples": 16, **settings}))


def test_stream_errors_name_the_source_the_size_and_the_pattern(real, tmp_path):
    stream = {"type": "webdataset", "urls": real["shards"]["urls"], "size": 30}
    message = (r"^sources\[1\] \(webdataset\): size 30, but the stream '.*' has 28 samples passing the class filter "
               r"\(40 samples in 5 shards\)$")
    with pytest.raises(ValueError, match=message):
        _check(real, [{"type": "world", "size": 10}, stream], classes=real["classes"])
    missing = str(tmp_path / "nowhere" / "{00000..00003}.tar")
    with pytest.raises(FileNotFoundError, match=rf"^sources\[0\] \(webdataset\): shard pattern "
                                                rf"'{re.escape(missing)}' matches no file"):
        _check(real, [{**stream, "urls": missing}])
    with pytest.raises(ValueError, match=r"sources\[0\] \(webdataset\): exclude_files lists image files"):
        _check(real, [{**stream, "size": 5, "exclude_files": str(tmp_path / "x.txt")}])
    with pytest.raises(ValueError, match=r"buffer must be a positive integer"):
        _check(real, [{**stream, "buffer": 0}])


def _config(tmp_path: Path, name: str, sources: list, **changes) -> Path:
    values = {"out": str(tmp_path / name), "architecture": "clipshift-tiny-bow", "objective": "contrastive",
              "samples": 48, "sources": sources, "train": {"epochs": 2, "batch_size": 16, "lr": 0.002}, **changes}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def _weights(run: Path) -> dict:
    return load_file(str(run / "model" / "model.safetensors"))


def _same_rows_as_files_and_shards(folder: Path, n: int, per_shard: int) -> tuple[Path, str]:
    """`n` captioned PNGs as a CSV table and, the same bytes in the same order, as shards."""
    (folder / "images").mkdir(parents=True)
    rows, members = ["filepath\tcaption"], []
    for i in range(n):
        wnid = mini.WNIDS[i % 4]
        buffer = io.BytesIO()
        Image.fromarray(mini.draw(wnid, "diverse", 7_000 + i)).save(buffer, format="PNG")
        (folder / "images" / f"{i:04d}.png").write_bytes(buffer.getvalue())
        rows.append(f"images/{i:04d}.png\t{mini.caption(wnid, i // 4)}")
        members.append((f"{i:06d}", buffer.getvalue(), mini.caption(wnid, i // 4).encode()))
    (folder / "train.tsv").write_text("\n".join(rows) + "\n")
    for s in range(0, n, per_shard):
        with tarfile.open(folder / f"{s // per_shard:05d}.tar", "w") as archive:
            for key, png, text in members[s: s + per_shard]:
                for suffix, payload in (("png", png), ("txt", text)):
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size = len(payload)
                    archive.addfile(info, io.BytesIO(payload))
    last = (n - 1) // per_shard
    return folder / "train.tsv", str(folder / (f"{{00000..{last:05d}}}.tar" if last else "00000.tar"))


def test_the_same_rows_as_a_csv_or_as_a_shard_train_to_the_same_weights(real, tmp_path):
    """A CSV and the same rows written as one shard, each beside the same stream: a shard read through a
    buffer that holds it whole is drawn in the order of the rows' permutation, so the batches and the
    weights are equal. In several shards (shuffled per pass) each pass holds the same samples."""
    table, shard = _same_rows_as_files_and_shards(tmp_path / "one", 40, per_shard=40)
    other = {"type": "webdataset", "urls": real["shards"]["urls"], "weight": 1}
    files = _config(tmp_path, "files", [{"type": "csv", "path": str(table), "weight": 2}, other],
                    classes=real["classes"])
    shards = _config(tmp_path, "shards", [{"type": "webdataset", "urls": shard, "weight": 2, "buffer": 40}, other],
                     classes=real["classes"])
    for config in (files, shards):
        assert main(["train", str(config), "--quiet"]) == 0
    a, b = _weights(tmp_path / "files"), _weights(tmp_path / "shards")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # in 5 shards: the order differs (shards shuffled per pass), each pass's samples do not
    _, spread = _same_rows_as_files_and_shards(tmp_path / "five", 40, per_shard=8)
    built = []
    for source in ({"type": "csv", "path": str(table)}, {"type": "webdataset", "urls": spread, "buffer": 40}):
        config = load_train_config(overrides={"classes": real["classes"], "samples": 56, "objective": "simclr",
                                              "sources": [source, other], "train": {"batch_size": 56}})
        data, _ = build_training_data(config, None, progress=False)
        built.append(_drawn_images(data, 2))  # 28 of each source per epoch: a pass over the 28 rows kept
    assert built[0][0] != built[1][0] and sorted(built[0][0]) == sorted(built[1][0])
    assert sorted(built[0][1]) == sorted(built[1][1])


def _drawn_images(data: MixedData, steps: int, source: int = 0) -> list[list[bytes]]:
    """The images `source` gave each of the first `steps` batches, in batch order."""
    out = []
    for step in range(steps):
        data.fetch(step)
        positions = torch.from_numpy(np.flatnonzero(data.sources == source))
        out.append([image.numpy().tobytes() for image in data.batch(positions)["images"]])
    return out


def test_a_mixed_run_resumes_exactly_with_holdout(real, tmp_path):
    sources = [{"type": "imagenet_captions", "json": str(real["captions"]["json"]),
                "root": str(real["captions"]["root"]), "weight": 1},
               {"type": "webdataset", "urls": real["shards"]["urls"], "size": 20, "subset_seed": 3, "weight": 1}]
    changes = {"objective": "supervised", "labels": "text_match", "classes": real["classes"], "samples": 40,
               "train": {"epochs": 2, "batch_size": 8, "lr": 0.002, "checkpoint_every": 3, "holdout": 0.2,
                         "log_every": 1}}
    whole = _config(tmp_path, "whole", sources, **changes)
    assert main(["train", str(whole), "--quiet"]) == 0
    summary = yaml.safe_load((tmp_path / "whole" / "config.yaml").read_text())["data"]
    assert summary["sources"][1]["take"].startswith("the first 20 samples passing the class filter, in shard order")
    assert summary["images_per_source"] == [20, 20] and summary["streamed"]
    records = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "holdout_accuracy" in r] == [1, 2]
    broken = _config(tmp_path, "broken", sources, **changes)
    killed_at = kill_after_first_checkpoint(["train", str(broken), "--quiet"], tmp_path / "broken" / "checkpoints")
    assert main(["train", str(broken), "--quiet", "--resume"]) == 0
    at = int(killed_at.name.split("-")[1])
    assert where_resumed(tmp_path / "broken" / "metrics.jsonl", "supervised")[0] == at and at % 4  # mid-epoch
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "broken")
    assert all(torch.equal(a[k], b[k]) for k in a)
