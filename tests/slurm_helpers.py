"""A one-node Slurm on this machine for the plan.slurm test, from Debian's slurm-wlm and munge (which
``make install`` installs as root; nothing is installed here).

:func:`one_node_slurm` starts what is not running: munged as the munge user (the key made first
when there is none), then slurmctld and slurmd with a minimal slurm.conf written into a folder of
its own, on free ports, one node (``localhost``, this machine's cores) in one partition. Slurm's
commands find that cluster through ``SLURM_CONF``, which it returns with the processes it started;
:func:`stop` ends those (by their ids) and no other.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld", "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "squeue", "sinfo", "munge", "unmunge")
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_PID = Path("/run/munge/munged.pid")


class Unavailable(RuntimeError):
    """Slurm cannot be started here; the message says what is missing."""


@dataclass
class Cluster:
    conf: Path
    env: dict
    started: list[int] = field(default_factory=list)  # process ids of the daemons started here


def missing() -> list[str]:
    """The binaries of slurm-wlm and munge that are not installed."""
    gone = [path for path in DAEMONS.values() if not os.access(path, os.X_OK)]
    return gone + [name for name in CLIENTS if shutil.which(name) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _munge_works() -> bool:
    munge = subprocess.run(["munge", "-n"], capture_output=True)
    return munge.returncode == 0 and subprocess.run(["unmunge"], input=munge.stdout,
                                                     capture_output=True).returncode == 0


def _start_munge() -> int | None:
    """munged as the munge user with the system's key (made when missing); its process id if started here."""
    if _munge_works():
        return None
    if not MUNGE_KEY.is_file():
        maker = shutil.which("mungekey") or shutil.which("create-munge-key")
        if maker is None:
            raise Unavailable(f"{MUNGE_KEY} is missing and neither mungekey nor create-munge-key is installed")
        subprocess.run([maker, "--create"] if maker.endswith("mungekey") else [maker], check=True, capture_output=True)
    for folder in (Path("/run/munge"), Path("/var/lib/munge"), Path("/var/log/munge")):
        folder.mkdir(parents=True, exist_ok=True)
        shutil.chown(folder, "munge", "munge")
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o400)
    subprocess.run(["runuser", "-u", "munge", "--", DAEMONS["munged"]], check=True, capture_output=True)
    _wait(_munge_works, 10, "munged did not answer")
    return int(MUNGE_PID.read_text()) if MUNGE_PID.is_file() else None


def slurm_conf(folder: Path, cpus: int) -> str:
    """A minimal slurm.conf for one node, ``localhost``, with `cpus` CPUs in one partition, ``debug``."""
    return "\n".join([
        "ClusterName=clipshift-test", "SlurmctldHost=localhost", f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}", "AuthType=auth/munge", "CredType=cred/munge", "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "SlurmUser=root",
        "SlurmdUser=root", "MpiDefault=none", "ReturnToService=2", "SchedulerType=sched/builtin",
        "JobCompType=jobcomp/none", "AccountingStorageType=accounting_storage/none",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"NodeName=localhost CPUs={cpus} State=UNKNOWN",
        "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP", ""])


def _wait(ready, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not ready():
        if time.monotonic() > deadline:
            raise Unavailable(what)
        time.sleep(0.2)


def _node_idle(env: dict) -> bool:
    out = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=env, capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")


def one_node_slurm(folder: Path) -> Cluster:
    """Start munged (unless it runs), slurmctld and slurmd on a slurm.conf written into `folder`; wait
    until the node takes jobs. :class:`Unavailable` says why it cannot."""
    if missing():
        raise Unavailable(f"missing {', '.join(missing())} (as root: make install, or apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise Unavailable("a one-node Slurm needs root here (slurmd runs the jobs)")
    folder.mkdir(parents=True, exist_ok=True)
    for sub in ("state", "spool"):
        (folder / sub).mkdir(exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, len(os.sched_getaffinity(0))))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = Cluster(conf, env)
    try:
        munged = _start_munge()
        cluster.started += [munged] if munged else []
        for daemon, args in (("slurmctld", ["-c"]), ("slurmd", ["-N", "localhost"])):
            run = subprocess.run([DAEMONS[daemon], *args], env=env, capture_output=True, text=True)
            pid_file = folder / f"{daemon}.pid"
            _wait(pid_file.is_file, 10, f"{daemon} did not start: {run.stderr.strip()[-300:]} "
                                        f"(log: {folder / (daemon + '.log')})")
            cluster.started.append(int(pid_file.read_text()))
        _wait(lambda: _node_idle(env), 30, f"the node did not come up (logs in {folder})")
    except BaseException:
        stop(cluster)
        raise
    return cluster


def stop(cluster: Cluster) -> None:
    """End the daemons this cluster started, the last started first, each by its process id."""
    for pid in reversed(cluster.started):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
    cluster.started.clear()


def wait_for_queue(env: dict, jobs: list[str], seconds: float) -> None:
    """Until none of `jobs` (array job ids) is pending or running; TimeoutError after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        out = subprocess.run(["squeue", "-h", "-o", "%F %i %T"], env=env, capture_output=True, text=True)
        queued = [line for line in out.stdout.splitlines() if line.split()[0] in jobs]
        if out.returncode == 0 and not queued:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"Slurm jobs still queued after {seconds:.0f} s:\n" + "\n".join(queued) + out.stderr)
        time.sleep(0.5)
