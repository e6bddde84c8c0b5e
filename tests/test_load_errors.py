"""Weights that cannot be loaded are one-line errors saying what was wrong and what to do instead:
a file that is not a checkpoint, a checkpoint of another model, a download that cannot happen."""

import os
import subprocess
import sys

import numpy as np
import open_clip
import pytest
import timm
import torch
from PIL import Image

from clipshift.cli import main
from clipshift.models import convnet  # noqa: F401  (registers the tiny timm convnet)
from clipshift.models.factory import register_model_configs
from clipshift.models.load import load_model

# huggingface_hub's words when the hub cannot be reached and its cache lacks the file
HUB_OFFLINE = ("An error happened while trying to locate the file on the Hub and we cannot find the requested "
               "files in the local cache.")


def offline_download(*args, **kwargs):
    """open_clip's download_pretrained without a network: the hub client's OSError (LocalEntryNotFoundError),
    re-raised by open_clip as a FileNotFoundError in its own words."""
    try:
        raise OSError(HUB_OFFLINE)
    except OSError as error:
        raise FileNotFoundError(f"Failed to download file (open_clip_pytorch_model.bin) for "
                                f"timm/vit_base_patch32_clip_224.openai. Last error: {error}")

@pytest.fixture
def world(tmp_path):
    """The smallest exported world `clipshift eval --world` opens: one image of one class."""
    (tmp_path / "world" / "test" / "circle").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(tmp_path / "world" / "test" / "circle" / "0.png")
    return tmp_path / "world"


@pytest.mark.parametrize("model", ["clipshift-tiny", "timm/clipshift_convnet_tiny"])
@pytest.mark.parametrize("content", [b"a text file, not weights\n", b"", bytes(range(256))])
def test_a_file_that_is_not_a_checkpoint_is_named(tmp_path, model, content):
    path = tmp_path / "weights.pt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"'.*weights\.pt' is not a checkpoint file .* as a \.pt, \.pth"):
        load_model(model, str(path))


def test_a_checkpoint_of_another_model_says_so(tmp_path):
    register_model_configs()
    timm_weights, clip_weights = tmp_path / "timm.pth", tmp_path / "clip.pt"
    torch.save(timm.create_model("clipshift_convnet_tiny", num_classes=10).state_dict(), timm_weights)
    torch.save(open_clip.create_model("clipshift-tiny").state_dict(), clip_weights)
    with pytest.raises(ValueError, match=r"timm\.pth': a checkpoint, but not one clipshift-tiny can load "
                                         r"\(RuntimeError: Error\(s\) in loading state_dict"):
        load_model("clipshift-tiny", str(timm_weights))
    with pytest.raises(ValueError, match=r"clip\.pt': a checkpoint, but not one timm/clipshift_convnet_tiny can load"):
        load_model("timm/clipshift_convnet_tiny", str(clip_weights))
    assert load_model("clipshift-tiny", str(clip_weights)).kind == "clip"  # the right one loads


def test_eval_with_a_text_file_as_weights_exits_2_with_one_line(tmp_path, world, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("not weights\n")
    for model in ("clipshift-tiny", "timm/clipshift_convnet_tiny"):
        assert main(["eval", "--model", model, "--pretrained", str(path), "--world", str(world),
                     "--out", str(tmp_path / "out"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--pretrained '{path}' is not a checkpoint file" in err


def test_weights_that_cannot_be_downloaded_say_what_to_do(tmp_path, world, monkeypatch, capsys):
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline_download)
    monkeypatch.setattr(open_clip.pretrained, "download_pretrained", offline_download)
    with pytest.raises(FileNotFoundError, match=r"ViT-B-32 --pretrained openai: the weights could not be downloaded"):
        load_model("ViT-B-32", "openai")
    assert main(["eval", "--model", "ViT-B-32", "--pretrained", "openai", "--world", str(world),
                 "--out", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "could not be downloaded" in err and "--pretrained /path/to/file.pt" in err and "HF_HOME" in err
    assert f"({HUB_OFFLINE})" in err  # the first reason, not the libraries' wrappers around it


@pytest.mark.slow
def test_eval_offline_in_a_fresh_process(tmp_path, world):
    """The real offline path, no patching: the hub client told not to reach the network, an empty cache."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "XDG_CACHE_HOME": str(tmp_path)}
    run = subprocess.run([sys.executable, "-m", "clipshift.cli", "eval", "--model", "ViT-B-32", "--pretrained",
                          "openai", "--world", str(world), "--out", str(tmp_path / "out"), "--quiet"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.count("\n") == 1 and "the weights could not be downloaded" in run.stderr
