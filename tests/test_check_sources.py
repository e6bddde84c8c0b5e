"""Bad or missing training data is named, with what was expected, before anything is trained."""

from __future__ import annotations

import json
import re
import tarfile
from pathlib import Path

import pytest

import miniature_real as mini
from clipshift.cli import main
import clipshift.data
from clipshift.recipes.common.training import check_sources, load_train_config


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("real")
    return {"captions": mini.write_imagenet_captions(root / "ic", per_class=2),
            "csv": mini.write_caption_csv(root / "yfcc", per_class=2), "shards": mini.write_shards(root / "wds"),
            "root": root}


def _ic(real, **changes) -> dict:
    return {"type": "imagenet_captions", "json": str(real["captions"]["json"]), "root": str(real["captions"]["root"]),
            **changes}


def _csv(real, **changes) -> dict:
    return {"type": "csv", "path": str(real["csv"]["path"]), **changes}


def _check(sources: list, **settings):
    return check_sources(load_train_config(overrides={"sources": sources, **settings}))


def test_good_sources_pass_and_are_read_once(real, monkeypatch):
    decoded = []
    real_decode = clipshift.data.decode_rgb  # what check_sources calls
    monkeypatch.setattr(clipshift.data, "decode_rgb",
                        lambda path, size=None: decoded.append(path) or real_decode(path, size))
    read = _check([_csv(real), _ic(real), {"type": "world", "size": 10}], classes="imagenet")
    assert [len(r.captions) if r else None for r in read] == [8, 8, None]
    assert len(decoded) == 2  # the first image of each file-backed source, not all 16
    assert _check([{"type": "webdataset", "urls": real["shards"]["urls"]}], samples=8) == [None]


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_table_errors(real, tmp_path):
    missing = tmp_path / "absent.tsv"
    with pytest.raises(FileNotFoundError,
                       match=rf"sources\[0\] \(csv\): caption table not found: {re.escape(str(missing))}"):
        _check([_csv(real, path=str(missing))])
    table = _write(tmp_path / "t.tsv", "filepath\ttext\nimages/a.jpg\ta candle\n")
    with pytest.raises(ValueError,
                       match=r"t\.tsv: missing column\(s\) \['caption or title'\]; found \['filepath', 'text'\]"):
        _check([_csv(real, path=table)])
    lines = real["csv"]["path"].read_text().splitlines()
    table = _write(real["root"] / "yfcc" / "gone.tsv", "\n".join([*lines[:3], "images/nowhere.jpg\ta candle"]) + "\n")
    with pytest.raises(FileNotFoundError, match=r"gone\.tsv: 1 image file\(s\) not found \(row 3: .*nowhere\.jpg\)"):
        _check([_csv(real, path=table)])
    with pytest.raises(ValueError, match=r"train\.tsv: no label column 'wnid' \(label_column of the source\)"):
        _check([_csv(real, label_column="wnid")])
    with pytest.raises(ValueError, match=r"labels: 'source', but the source has no labels for classes 'imagenet'"):
        _check([_csv(real)], classes="imagenet", objective="supervised", labels="source")
    rows = [line.split("\t") for line in lines[1:3]]
    bad = _write(real["root"] / "yfcc" / "wnids.tsv", "filepath\ttitle\tlabel\n"
                 f"{rows[0][0]}\t{rows[0][1]}\t{mini.CANDLE}\n{rows[1][0]}\t{rows[1][1]}\tn09999999\n")
    with pytest.raises(ValueError, match=r"wnids\.tsv: label column, row 2: 'n09999999' is not an ImageNet-1k wnid"):
        _check([_csv(real, path=bad)], classes="imagenet")
    with pytest.raises(ValueError, match=r"the labels are wnids .* but classes is 'world'; set classes to 'imagenet'"):
        _check([_csv(real, path=bad)])


def test_imagenet_captions_errors(real, tmp_path):
    with pytest.raises(FileNotFoundError,
                       match=r"sources\[0\] \(imagenet_captions\): ImageNet-Captions file not found"):
        _check([_ic(real, json=str(tmp_path / "absent.json"))])
    broken = _write(tmp_path / "broken.json", '[{"filename": ')
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        _check([_ic(real, json=broken)])
    with pytest.raises(ValueError, match=r"obj\.json: expected a JSON list of entries \{filename, wnid, title, "
                                         r"description, tags\}, got dict"):
        _check([_ic(real, json=_write(tmp_path / "obj.json", '{"a": 1}'))])
    entries = json.loads(real["captions"]["json"].read_text())
    no_wnid = _write(tmp_path / "no_wnid.json", json.dumps([entries[0], {"filename": "x.JPEG", "title": "t"}]))
    with pytest.raises(ValueError, match=r"no_wnid\.json: entry 1 has no 'wnid'"):
        _check([_ic(real, json=no_wnid)])
    unknown = _write(tmp_path / "unknown.json", json.dumps([entries[0], {**entries[1], "wnid": "n00000001"}]))
    with pytest.raises(ValueError, match=r"unknown\.json: entry 1 has wnid 'n00000001', which is not an ImageNet-1k "
                                         r"wnid"):
        _check([_ic(real, json=unknown)])
    moved = _write(tmp_path / "moved.json", json.dumps([entries[0], {**entries[1], "filename": "moved.JPEG"}]))
    with pytest.raises(FileNotFoundError, match=r"1 ImageNet-Captions images are not under .*moved\.JPEG"):
        _check([_ic(real, json=moved)])
    with pytest.raises(FileNotFoundError, match=r"root .*elsewhere is not a folder \(expected the ImageNet train tree "
                                                r"<root>/<wnid>/<filename>\)"):
        _check([_ic(real, root=str(tmp_path / "elsewhere"))])
    with pytest.raises(ValueError, match=r"sources\[0\] \(imagenet_captions\): missing \['root'\]"):
        _check([{"type": "imagenet_captions", "json": str(real["captions"]["json"])}])


def test_shard_errors(real, tmp_path):
    urls = real["shards"]["urls"].replace("00002", "00005")
    with pytest.raises(FileNotFoundError, match=r"sources\[0\] \(webdataset\): 3 of 6 shards of .* not found, "
                                                r"e\.g\. .*00003\.tar"):
        _check([{"type": "webdataset", "urls": urls}], samples=8)
    _write(tmp_path / "00000.tar", "not a tar archive")
    with pytest.raises(ValueError, match=r"00000\.tar: not a readable tar archive"):
        _check([{"type": "webdataset", "urls": str(tmp_path / "00000.tar")}], samples=8)
    with tarfile.open(tmp_path / "images.tar", "w") as archive:
        archive.add(real["shards"]["shards"][0], arcname="000000.jpg")
    with pytest.raises(ValueError, match=r"images\.tar: sample '000000' has no caption \(members \['jpg'\]; expected "
                                         r"KEY\.txt\)"):
        _check([{"type": "webdataset", "urls": str(tmp_path / "images.tar")}], samples=8)
    with pytest.raises(ValueError, match=r"has no label .*expected KEY\.cls"):
        _check([{"type": "webdataset", "urls": real["shards"]["urls"]}], samples=8, objective="supervised",
               labels="source")


def test_class_file_synonyms_size_and_images(real, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"classes: not 'world' or 'imagenet', and no file .*nowhere\.txt"):
        _check([_csv(real)], classes=str(tmp_path / "nowhere.txt"))
    wnids = _write(tmp_path / "subset.txt", f"{mini.CANDLE}\nn01440765\n")
    with pytest.raises(ValueError, match=rf"classes: {re.escape(wnids)}, line 2: 'n01440765' is not an ImageNet-1k "
                                         r"wnid"):
        _check([_csv(real)], classes=wnids)
    with pytest.raises(FileNotFoundError, match=r"synonyms file not found: .*syn\.yaml"):
        _check([_csv(real)], synonyms=str(tmp_path / "syn.yaml"))
    subset = mini.write_wnid_file(tmp_path / "two.txt", [mini.CANDLE, mini.BANANA])
    with pytest.raises(ValueError, match=r"sources\[0\] \(imagenet_captions\) after the class filter: size 5 exceeds "
                                         r"the 4 samples of the source"):
        _check([_ic(real, size=5)], classes=str(subset))
    with pytest.raises(ValueError, match=r"size must be a positive integer, got 0"):
        _check([_ic(real, size=0)])
    first = real["csv"]["images"] / sorted(p.name for p in real["csv"]["images"].iterdir())[0]
    saved = first.read_bytes()
    first.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    try:
        with pytest.raises(ValueError, match=rf"sources\[0\] \(csv\): cannot decode image .*{first.name}"):
            _check([_csv(real)])
    finally:
        first.write_bytes(saved)
    with pytest.raises(FileNotFoundError, match=r"init_from: .*simclr/model\.safetensors not found"):
        _check([_csv(real)], objective="finetune", init_from=str(tmp_path / "simclr"))


def test_cli_reports_before_training(real, tmp_path, capsys):
    config = tmp_path / "run.yaml"
    out = tmp_path / "run"
    config.write_text(json.dumps({"out": str(out), "architecture": "clipshift-tiny-bow",
                                  "sources": [_csv(real), _ic(real, root=str(tmp_path / "missing"))]}))
    assert main(["train", str(config), "--quiet"]) == 2
    assert "sources[1] (imagenet_captions): root" in capsys.readouterr().err
    assert not out.exists()  # nothing was written, nothing trained
