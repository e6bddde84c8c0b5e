"""The study's plan as commands, block after block: each block's lines independent of one another,
a block started once the previous one has finished.

:func:`plan_blocks` lists them: a generated world's set-up (``--prepare``: the world, the reference
model, the adversarial set), the training waves (a fine-tune after its pre-training), one
``--evaluate`` line per scored model, the final aggregation. :func:`write_plan_sh` writes them as
``plan.sh``, one command a line as typed (``clipshift ...``); :func:`write_plan_slurm` as
``plan.slurm``, which ``bash plan.slurm`` submits to Slurm: one array job per block, each waiting on
the previous one (``--dependency=afterok``), every task running the interpreter that wrote the plan
(``sys.executable -m clipshift.cli``: nothing relies on the job's PATH), its log in ``DIR/slurm/``.
"""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

from ...io import atomic_write_text

SBATCH = "sbatch"
MISSING_SBATCH = ("sbatch not found on PATH (expected Slurm's sbatch, which plan.slurm calls to submit one array "
                  "job per block of the plan)")


@dataclass
class Block:
    """One block of the plan: a title and its command lines, each an argv whose first word is
    ``clipshift`` or ``torchrun``."""

    title: str
    lines: list[list[str]]


def plan_blocks(config_path: Path, run_dir: Path, waves: list[list[dict]], torchrun: int = 0,
                prepare: bool = False) -> list[Block]:
    """The plan's blocks, in order (see the module doc); `prepare`: a generated world's set-up first."""
    study = ["clipshift", "study", str(config_path), "--out", str(run_dir)]
    train = (["torchrun", "--standalone", "--nproc_per_node", str(torchrun), "-m", "clipshift", "train"]
             if torchrun else ["clipshift", "train"])
    blocks = [Block("the world: generated, its reference model trained, its adversarial set filtered",
                    [[*study, "--prepare"]])] if prepare else []
    for i, wave in enumerate(waves, 1):
        blocks.append(Block(f"training, wave {i} ({len(wave)} models)",
                            [[*train, str(run_dir / "runs" / e["name"] / "train.yaml"), "--resume"] for e in wave]))
    scored = [e for wave in waves for e in wave if e["heads"]]
    blocks.append(Block(f"evaluation ({len(scored)} models)", [[*study, "--evaluate", e["name"]] for e in scored]))
    blocks.append(Block("effective robustness, verdicts, figures and the report", [study]))
    return blocks


def shell_line(argv: list[str], python: str | None = None) -> str:
    """`argv` as one shell line: as typed, or with `python` (an interpreter's absolute path) run by it:
    ``PYTHON -m clipshift.cli ...``, ``PYTHON -m torch.distributed.run ...``."""
    if python is not None:
        argv = [python, "-m", {"clipshift": "clipshift.cli", "torchrun": "torch.distributed.run"}[argv[0]], *argv[1:]]
    return " ".join(shlex.quote(a) for a in argv)


def write_plan_sh(path: Path, blocks: list[Block]) -> Path:
    """``plan.sh``: every block's lines under a numbered comment; written atomically, executable."""
    lines = ["#!/usr/bin/env bash", "# The study as independent commands: run each block's lines in any order or in",
             "# parallel (a Slurm array: plan.slurm, a job queue); a block needs the previous one finished.",
             "set -euo pipefail"]
    for i, block in enumerate(blocks, 1):
        lines += ["", f"# {i}. {block.title}", *[shell_line(argv) for argv in block.lines]]
    atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def require_sbatch() -> str:
    """The path of Slurm's ``sbatch``, or ValueError (one line) when it is not on PATH."""
    found = shutil.which(SBATCH)
    if found is None:
        raise ValueError(f"--slurm: {MISSING_SBATCH}; run --plan --slurm where Slurm's client commands are, or "
                         f"drop --slurm and hand plan.sh's lines to your scheduler")
    return found


def write_plan_slurm(path: Path, blocks: list[Block], run_dir: Path, python: str, sbatch_args: str = "") -> Path:
    """``plan.slurm`` (see the module doc): `python` runs every line; `sbatch_args` (one string, split as
    the shell would) go to every ``sbatch`` call, e.g. ``--partition gpu --gres gpu:1 --time 1-0``."""
    q = shlex.quote
    logs = run_dir / "slurm"
    extra = " ".join(q(a) for a in shlex.split(sbatch_args))
    lines = ["#!/usr/bin/env bash",
             f"# The study's plan (plan.sh) as Slurm array jobs: `bash {path.name}` submits one array job per block,",
             "# each after the previous one succeeded; every task runs the clipshift installation that wrote",
             f"# the plan ({python}); logs: {logs}/<job>_<task>.out",
             "set -euo pipefail",
             "if ! command -v sbatch >/dev/null 2>&1; then",
             f"  echo {q(f'{path.name}: {MISSING_SBATCH}')} >&2", "  exit 127", "fi",
             f"mkdir -p {q(str(logs))}", "after=()"]
    for i, block in enumerate(blocks, 1):
        name, tasks = q(f"clipshift-{run_dir.name}-{i}"), f"{len(block.lines)} task{'s' * (len(block.lines) != 1)}"
        lines += ["", f"# {i}. {block.title}: {tasks}",
                  f"job=$(sbatch --parsable --job-name={name} --array=0-{len(block.lines) - 1} "
                  f"--output={q(str(logs / '%A_%a.out'))} --kill-on-invalid-dep=yes ${{after[@]+\"${{after[@]}}\"}}"
                  f"{' ' + extra if extra else ''} <<'BLOCK'",
                  "#!/usr/bin/env bash", "set -euo pipefail", 'case "$SLURM_ARRAY_TASK_ID" in']
        lines += [f"  {j}) exec {shell_line(argv, python)} ;;" for j, argv in enumerate(block.lines)]
        lines += ['  *) echo "no line $SLURM_ARRAY_TASK_ID in this block" >&2; exit 2 ;;', "esac", "BLOCK", ")",
                  'job=${job%%;*}', f'echo "block {i}: job $job ({tasks})"',
                  'after=("--dependency=afterok:$job")']
    atomic_write_text(path, "\n".join(lines) + "\n")
    path.chmod(0o755)
    return path
