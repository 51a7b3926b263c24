"""A single-node SLURM on this machine, for the tests that submit through it.

Debian's slurm-wlm and munge, run as root without systemd, as in
``../shared/recipes/slurm-single-node.sh``. ``ensure_slurm()`` is idempotent: it installs
what is missing, starts what is not running and leaves a running cluster alone (restarting
it only when its slurm.conf had to change). It raises ``SlurmError`` with the reason when it
cannot: the tests fail then, they do not skip (CI runs as root and must prove the profile).
"""

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

# Debian puts the daemons in /usr/sbin, which a non-login shell's PATH may lack.
for _sbin in ("/usr/sbin", "/sbin"):
    if _sbin not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.environ.get("PATH", "") + os.pathsep + _sbin

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
COMMANDS = ("slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "munged", "munge")
CONF = Path("/etc/slurm/slurm.conf")
CTLD_LOG = Path("/var/log/slurm/slurmctld.log")
JOBCOMP = Path("/var/log/slurm/jobcomp.txt")  # SLURM's own record of every job that ended
SLURMD_LOG = Path("/var/log/slurm/slurmd.log")
PID_FILES = {"slurmctld": Path("/run/slurmctld.pid"), "slurmd": Path("/run/slurmd.pid")}
PARTITION = "debug"
READY = {"idle", "mixed", "allocated", "completing"}


class SlurmError(RuntimeError):
    """SLURM could not be brought up here; the message says why."""


def _run(*cmd: str, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path}: {e})"


def _install() -> None:
    """Debian's packages, once (apt waits for another apt to let go of its lock)."""
    if all(shutil.which(c) for c in COMMANDS):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ("-o", "DPkg::Lock::Timeout=600")
    for cmd in (
        ("apt-get", *lock, "update"),
        ("apt-get", *lock, "install", "-y", "--no-install-recommends", *PACKAGES),
    ):
        proc = _run(*cmd, timeout=900, env=env)
        if proc.returncode != 0:
            raise SlurmError(f"{' '.join(cmd)} failed: {(proc.stdout + proc.stderr)[-1500:]}")
    missing = [c for c in COMMANDS if not shutil.which(c)]
    if missing:
        raise SlurmError(f"installed {PACKAGES} but {missing} are not on PATH")


def _munge_works() -> bool:
    token = _run("munge", "-n")
    return token.returncode == 0 and _run("unmunge", input=token.stdout).returncode == 0


def _start_munge() -> None:
    if _munge_works():
        return
    Path("/run/munge").mkdir(parents=True, exist_ok=True)
    shutil.chown("/run/munge", "munge", "munge")
    proc = _run("su", "-s", "/bin/sh", "munge", "-c", "/usr/sbin/munged")
    for _ in range(50):
        if _munge_works():
            return
        time.sleep(0.1)
    raise SlurmError(f"munged does not answer: {proc.stderr.strip()}")


def conf_text() -> str:
    """slurm.conf for one node: this host, its CPUs, half its memory; memory enforced (a step
    whose processes' resident memory exceeds what its job asked for is killed, sampled every
    second: no cgroups needed here); no accounting daemon (no sacct), but every job that ends
    is recorded in ``JOBCOMP``."""
    host = socket.gethostname().split(".")[0]
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    return f"""\
# Written by ngprecomputed's tests (tests/slurm.py): a single-node SLURM for CI.
ClusterName=ci
SlurmctldHost={host}
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SlurmUser=root
SlurmctldPidFile={PID_FILES["slurmctld"]}
SlurmdPidFile={PID_FILES["slurmd"]}
SlurmdSpoolDir=/var/lib/slurm/slurmd
StateSaveLocation=/var/lib/slurm/slurmctld
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=task=1
JobAcctGatherParams=OverMemoryKill
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={JOBCOMP}
SlurmctldDebug=info
SlurmctldLogFile={CTLD_LOG}
SlurmdLogFile={SLURMD_LOG}
NodeName={host} CPUs={os.cpu_count()} RealMemory={mem_kb // 1024 // 2} State=UNKNOWN
PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _write_conf() -> bool:
    """Write slurm.conf; True if it changed."""
    text = conf_text()
    if CONF.is_file() and CONF.read_text() == text:
        return False
    for folder in ("/var/lib/slurm/slurmd", "/var/lib/slurm/slurmctld", CTLD_LOG.parent):
        Path(folder).mkdir(parents=True, exist_ok=True)
    CONF.parent.mkdir(parents=True, exist_ok=True)
    CONF.write_text(text)
    return True


def _pid(daemon: str) -> int | None:
    """The daemon's pid from its pid file, if that process is alive and is the daemon (a pid
    file left by a machine's earlier session may name another process by now)."""
    try:
        pid = int(PID_FILES[daemon].read_text().split()[0])
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError, IndexError):
        return None
    return pid if comm == daemon else None


def _stop(daemon: str) -> None:
    pid = _pid(daemon)
    if pid is None:
        return
    os.kill(pid, 15)
    for _ in range(100):
        if _pid(daemon) is None:
            return
        time.sleep(0.1)
    raise SlurmError(f"{daemon} (pid {pid}) did not stop for the new slurm.conf")


def _start(daemon: str, log: Path) -> None:
    if _pid(daemon) is not None:
        return
    proc = subprocess.run(
        [daemon], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    for _ in range(100):
        if _pid(daemon) is not None:
            return
        time.sleep(0.1)
    raise SlurmError(f"{daemon} did not start ({proc.returncode}): {proc.stderr}\n{_tail(log)}")


def _wait_ready(host: str, seconds: float = 60) -> None:
    """Until the controller answers and the node takes jobs (a DOWN node is resumed)."""
    deadline = time.monotonic() + seconds
    state = ""
    while time.monotonic() < deadline:
        proc = _run("sinfo", "-h", "-N", "-n", host, "-o", "%T", timeout=20)
        state = proc.stdout.strip().rstrip("*~#$@").lower()
        if proc.returncode == 0 and state in READY:
            return
        if state in ("down", "drained", "draining"):
            _run("scontrol", "update", f"nodename={host}", "state=resume")
        time.sleep(0.5)
    raise SlurmError(
        f"node {host} not ready after {seconds:.0f} s (sinfo: {state!r})\n"
        f"slurmctld.log:\n{_tail(CTLD_LOG)}\nslurmd.log:\n{_tail(SLURMD_LOG)}"
    )


def ensure_slurm() -> None:
    """A running single-node SLURM whose node takes jobs, or ``SlurmError`` saying why."""
    if os.geteuid() != 0:
        raise SlurmError(
            "the SLURM tests install and start slurmctld, slurmd and munged, which needs root "
            "(CI runs as root)"
        )
    _install()
    _start_munge()
    if _write_conf():
        for daemon in ("slurmd", "slurmctld"):
            _stop(daemon)
    _start("slurmctld", CTLD_LOG)
    _start("slurmd", SLURMD_LOG)
    _wait_ready(socket.gethostname().split(".")[0])


def jobcomp_mark() -> int:
    """Where ``JOBCOMP`` ends now: pass it to ``ended_jobs`` to see only the jobs that end later
    (the file outlives a test run, and a rerun's ``tmp_path`` and job ids can repeat old ones)."""
    return JOBCOMP.stat().st_size if JOBCOMP.exists() else 0


def ended_jobs(since: int = 0) -> dict[str, dict[str, str]]:
    """SLURM's job completion records (``jobcomp/filetxt``: one ``key=value`` line per job that
    ended) written after byte ``since`` of the file, by job id."""
    if not JOBCOMP.exists():
        return {}
    with JOBCOMP.open("rb") as f:
        f.seek(since)
        text = f.read().decode(errors="replace")
    jobs = {}
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if "JobId" in fields:
            jobs[fields["JobId"]] = fields
    return jobs
