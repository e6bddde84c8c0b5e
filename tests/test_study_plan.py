"""``clipshift study --plan``: a pure function of the configuration and the data on disk (nothing
generated, trained or decoded; a generated world's set-up is the plan's first block), written
atomically; ``--slurm``: plan.slurm, one Slurm array job per block, each after the previous one. The
slow tests run the plan's lines with bash, and plan.slurm on a one-node Slurm, and get the local
run's summary.csv byte for byte."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from clipshift.cli import main

from miniature_real import WNIDS, write_caption_csv, write_data_root, write_imagenet_captions, write_wnid_file

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(Path(sys.executable).absolute())


def blocks_of(plan_sh: Path) -> list[list[str]]:
    """plan.sh's blocks: the command lines under each numbered comment, in order."""
    blocks = []
    for line in plan_sh.read_text().splitlines():
        if line.startswith("# ") and line[2:].split(".")[0].isdigit():
            blocks.append([])
        elif line and not line.startswith(("#", "set ")) and blocks:
            blocks[-1].append(line)
    return blocks


def forbid(monkeypatch, *targets: str) -> None:
    """Make each dotted function fail if called: what --plan must never do."""
    for target in targets:
        module, name = target.rsplit(".", 1)

        def refuse(*args, _name=target, **kwargs):
            raise AssertionError(f"{_name} called")

        monkeypatch.setattr(f"{module}.{name}", refuse)


NO_WORK = ("clipshift.recipes.study.data.build_world", "clipshift.recipes.study.data.load_training_set",
           "clipshift.recipes.study.data.load_eval_set", "clipshift.recipes.study.run.run_training",
           "clipshift.data.lazy.LazyImages.materialize", "clipshift.data.lazy.LazyImages.__getitem__")


def test_world_plan_generates_trains_and_decodes_nothing(tmp_path, monkeypatch):
    forbid(monkeypatch, *NO_WORK)
    out = tmp_path / "quick"
    start = time.perf_counter()
    assert main(["study", "--quick", "--out", str(out), "--plan", "--quiet"]) == 0
    seconds = time.perf_counter() - start
    assert seconds < 20, f"--plan took {seconds:.1f} s"
    assert not (out / "world").exists() and not (out / "runs" / "reference").exists()
    assert not list(out.rglob("*.safetensors"))
    blocks = blocks_of(out / "plan.sh")
    study = f"clipshift study {out / 'config.yaml'} --out {out}"
    assert blocks[0] == [f"{study} --prepare"]  # the world, its reference model, its adversarial set: first
    trains = [line for block in blocks[1:3] for line in block]
    assert all(line.startswith("clipshift train ") and line.endswith(" --resume") for line in trains)
    assert len(trains) == len(list((out / "runs").glob("*/train.yaml"))) == 36
    assert all(line.startswith(f"{study} --evaluate ") for line in blocks[3]) and blocks[4] == [study]
    assert len(blocks) == 5 and (out / "plan.sh").stat().st_mode & 0o777 == 0o755
    # pure: planned again, the same files, plan.sh replaced whole (a new file renamed onto it)
    before = {p: p.read_bytes() for p in [out / "plan.sh", *sorted(out.glob("runs/*/train.yaml"))]}
    inode = (out / "plan.sh").stat().st_ino
    assert main(["study", "--quick", "--out", str(out), "--plan", "--quiet"]) == 0
    assert {p: p.read_bytes() for p in before} == before and (out / "plan.sh").stat().st_ino != inode
    assert not list(out.glob(".plan.sh.*"))


@pytest.fixture(scope="module")
def imagenet_overrides(tmp_path_factory) -> list[str]:
    """configs/fang2022-imagenet.yaml on miniature ImageNet-Captions, a YFCC-style table and
    ImageNet-family sets: the paths and sizes that fit them, every other setting as shipped."""
    root = tmp_path_factory.mktemp("miniature")
    captions = write_imagenet_captions(root / "imagenet-captions", per_class=20)
    table = write_caption_csv(root / "yfcc", per_class=20)
    write_data_root(root / "eval")
    data = {"narrow": [{"type": "imagenet_captions", "json": str(captions["json"]), "root": str(captions["root"])}],
            "diverse": [{"type": "csv", "path": str(table["path"])}]}
    return [f"data={yaml.safe_dump(data, default_flow_style=True).strip()}", f"eval_root={root / 'eval'}",
            f"classes={write_wnid_file(root / 'classes.txt', WNIDS)}", "train_size=40", "sizes=[20,40]",
            "probe_images=64", "reference={train_size: 20, epochs: 1}",
            "baselines=[{train_size: 10, epochs: 1}, {train_size: 20, epochs: 2}, {train_size: 40, epochs: 3}]"]


def test_imagenet_config_plan_takes_seconds_and_reads_no_training_image(imagenet_overrides, tmp_path, monkeypatch,
                                                                          capsys):
    forbid(monkeypatch, *NO_WORK)
    out = tmp_path / "imagenet"
    start = time.perf_counter()
    assert main(["study", str(ROOT / "configs" / "fang2022-imagenet.yaml"), *imagenet_overrides, "--out", str(out),
                 "--plan", "--quiet"]) == 0
    seconds = time.perf_counter() - start
    assert seconds < 20, f"--plan took {seconds:.1f} s"
    blocks = blocks_of(out / "plan.sh")
    assert [len(b) for b in blocks] == [3 + 3 * 9, 3, 3 + 3 * 9, 1]  # no set-up block: the data are on disk
    assert blocks[0][0].startswith("clipshift train ") and "RN50" in (out / "runs" / "clip_f100_n40_s0" /
                                                                       "train.yaml").read_text()
    # the cost line: the image passes, and the time at the rate the files decode here (a lower bound)
    capsys.readouterr()
    assert main(["study", str(ROOT / "configs" / "fang2022-imagenet.yaml"), *imagenet_overrides, "--out", str(out),
                 "--plan"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(rf"plan: {re.escape(str(out / 'plan.sh'))} \(33 training runs, 3.47e\+04 image passes: size x "
                        r"epochs summed; training from these files runs at most as fast as they decode here, \d+ img/s "
                        r"on \d+ threads?: at least [\d.e+]+ (s|min|hours|days)\)", line), line


def fake_sbatch(folder: Path) -> Path:
    """An ``sbatch`` that records each call (arguments, the script on stdin) and answers a job id."""
    folder.mkdir()
    script = folder / "sbatch"
    script.write_text('#!/usr/bin/env bash\nn=$(( $(ls "$SBATCH_LOG" | wc -l) / 2 + 1 ))\n'
                      'printf "%s\\n" "$@" > "$SBATCH_LOG/$n.args"\ncat > "$SBATCH_LOG/$n.sh"\necho "$((100 + n));test"\n')
    script.chmod(0o755)
    return folder


def test_plan_slurm_submits_one_array_job_per_block_each_after_the_previous(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "quick"
    args = "--partition gpu --time '1-0' --gres gpu:1"
    assert main(["study", "--quick", "--out", str(out), "--plan", "--slurm", "--slurm-args", args, "--quiet"]) == 0
    blocks = blocks_of(out / "plan.sh")
    log = tmp_path / "calls"
    log.mkdir()
    run = subprocess.run(["bash", str(out / "plan.slurm")], env={**os.environ, "SBATCH_LOG": str(log)},
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [f"block {i}: job {100 + i} ({len(b)} task{'s' * (len(b) > 1)})"
                                       for i, b in enumerate(blocks, 1)]
    assert (out / "slurm").is_dir()
    for i, block in enumerate(blocks, 1):
        argv = (log / f"{i}.args").read_text().splitlines()
        assert argv[:2] == ["--parsable", f"--job-name=clipshift-quick-{i}"]
        assert f"--array=0-{len(block) - 1}" in argv and f"--output={out / 'slurm' / '%A_%a.out'}" in argv
        assert argv[-6:] == ["--partition", "gpu", "--time", "1-0", "--gres", "gpu:1"]
        assert [a for a in argv if a.startswith("--dependency")] == ([f"--dependency=afterok:{99 + i}"] if i > 1
                                                                     else [])
        script = (log / f"{i}.sh").read_text()
        tasks = [line.split(") exec ", 1) for line in script.splitlines() if ") exec " in line]
        assert [int(n) for n, _ in tasks] == list(range(len(block)))
        for (_, command), line in zip(tasks, block):  # the interpreter that wrote the plan runs each line
            words, planned = shlex.split(command.removesuffix(" ;;")), shlex.split(line)
            assert words[:3] == [PYTHON, "-m", "clipshift.cli"] and words[3:] == planned[1:]
        task = subprocess.run(["bash", "-c", script], env={**os.environ, "SLURM_ARRAY_TASK_ID": "999"},
                              capture_output=True, text=True)
        assert task.returncode == 2 and task.stderr == "no line 999 in this block\n"


def test_torchrun_lines_under_slurm_run_the_same_interpreter(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path / 'bin')}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "quick"
    assert main(["study", "--quick", "--out", str(out), "--plan", "--slurm", "--torchrun", "4", "--quiet"]) == 0
    text = (out / "plan.slurm").read_text()
    assert f"exec {PYTHON} -m torch.distributed.run --standalone --nproc_per_node 4 -m clipshift train " in text
    assert "torchrun --standalone --nproc_per_node 4 -m clipshift train " in (out / "plan.sh").read_text()


def test_slurm_missing_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch when the plan is written
    assert main(["study", "--quick", "--out", str(tmp_path / "a"), "--plan", "--slurm", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sbatch not found on PATH (expected Slurm's sbatch" in err
    assert not (tmp_path / "a").exists()
    monkeypatch.setenv("PATH", f"{fake_sbatch(tmp_path / 'bin')}")  # written where sbatch is, run where it is not
    assert main(["study", "--quick", "--out", str(tmp_path / "b"), "--plan", "--slurm", "--quiet"]) == 0
    run = subprocess.run(["/bin/bash", str(tmp_path / "b" / "plan.slurm")], env={"PATH": str(empty)},
                         capture_output=True, text=True)
    assert run.returncode == 127 and run.stdout == ""
    assert run.stderr == ("plan.slurm: sbatch not found on PATH (expected Slurm's sbatch, which plan.slurm calls to "
                          "submit one array job per block of the plan)\n")


@pytest.mark.parametrize("flags, message", [
    (["--slurm"], "give them with --plan"), (["--plan", "--prepare"], "give one of them"),
    (["--torchrun", "2"], "give them with --plan"), (["--plan", "--evaluate", "x"], "give one of them")])
def test_plan_flags_go_together(flags, message, tmp_path, capsys):
    assert main(["study", "--quick", "--out", str(tmp_path), *flags, "--quiet"]) == 2
    assert message in capsys.readouterr().err


# --- the plan run: with bash, and on a one-node Slurm (slow) ---------------------------------------------------------

# The quick study with one seed (14 models, every kind of line of the plan), one model at a time: trained on a
# CPU, a model's weights depend on the threads its sums were split over, and a local run's parallel workers
# (jobs=0) get one thread each, while a planned line, as `jobs=1`, gets the process's default threads.
QUICK = ["--quick", "seeds=[0]", "jobs=1"]


@pytest.fixture(scope="module")
def local_quick(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local")
    assert main(["study", *QUICK, "--out", str(out), "--quiet"]) == 0
    return out


def venv_env() -> dict:
    """This environment with the interpreter's folder (its `clipshift` script) first on PATH."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.slow
def test_plan_lines_run_with_bash_reproduce_the_local_run(local_quick, tmp_path, monkeypatch):
    out = tmp_path / "planned"
    assert main(["study", *QUICK, "--out", str(out), "--plan", "--quiet"]) == 0
    run = subprocess.run(["bash", str(out / "plan.sh")], env=venv_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "summary.csv").read_bytes() == (local_quick / "summary.csv").read_bytes()
    assert yaml.safe_load((out / "runs" / "reference" / "config.yaml").read_text())  # trained by the first block
    # an --evaluate line reads its evaluation sets only: no world made, nothing trained, no training image read
    # (but the probe's, for a model scored with a linear probe)
    forbid(monkeypatch, "clipshift.recipes.study.data.build_world", "clipshift.recipes.study.run.run_training",
           "clipshift.recipes.study.run.check_sources")
    for name, probe in (("baseline_n150_e3", False), ("clip_f100_n600_s0", True)):
        kept = (out / "runs" / name / "eval.csv").read_bytes()
        (out / "runs" / name / "eval.json").unlink()
        with monkeypatch.context() as patch:
            if not probe:
                forbid(patch, "clipshift.recipes.study.data.load_training_set")
            assert main(["study", str(out / "config.yaml"), "--out", str(out), "--evaluate", name, "--quiet"]) == 0
        assert (out / "runs" / name / "eval.csv").read_bytes() == kept


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    """A one-node Slurm on this machine (tests/slurm_helpers.py), or a skip saying what is missing."""
    from slurm_helpers import Unavailable, one_node_slurm, stop

    try:
        cluster = one_node_slurm(tmp_path_factory.mktemp("slurm"))
    except Unavailable as why:
        pytest.skip(f"no one-node Slurm here: {why}")
    yield cluster
    stop(cluster)


@pytest.mark.slow
def test_plan_slurm_on_a_one_node_slurm_reproduces_the_local_run(slurm, local_quick, tmp_path, monkeypatch):
    from slurm_helpers import wait_for_queue

    out = tmp_path / "on-slurm"
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    assert main(["study", *QUICK, "--out", str(out), "--plan", "--slurm", "--quiet"]) == 0
    submitted = subprocess.run(["bash", str(out / "plan.slurm")], env=slurm.env, capture_output=True, text=True,
                               cwd=tmp_path)
    assert submitted.returncode == 0, submitted.stderr
    jobs = [line.split()[3] for line in submitted.stdout.splitlines()]
    assert len(jobs) == len(blocks_of(out / "plan.sh")) == 5
    wait_for_queue(slurm.env, jobs, seconds=1200)
    logs = sorted((out / "slurm").glob("*.out"))
    assert len(logs) == sum(len(b) for b in blocks_of(out / "plan.sh"))  # one log per line, in the run folder
    assert (out / "summary.csv").is_file(), "\n".join(f"{p.name}: {p.read_text()[-500:]}" for p in logs)
    assert (out / "summary.csv").read_bytes() == (local_quick / "summary.csv").read_bytes()
