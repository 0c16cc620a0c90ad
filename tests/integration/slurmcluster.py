"""A real Slurm cluster of two nodes on this machine for tests (../shared/ENGINES.md's recipe).

Usage::

    reason = slurmcluster.unavailable_reason()   # None when Slurm and munge are installed
    with slurmcluster.SlurmCluster() as cluster:
        cluster.env          # os.environ plus SLURM_CONF: pass it to sbatch/squeue/scontrol
        cluster.node_state("n1")

munged is started only if none answers (``munge -n | unmunge``); one already running is used and
left alone. slurmctld and one ``slurmd -N nK`` per node run in the foreground (``-D``) from a
slurm.conf in a temp dir, on free ports; ``stop()`` ends exactly the processes this object started
(their PIDs, SIGTERM then SIGKILL), plus any job step processes they left (none, normally).

The configuration defines a third node, ``n3``, whose slurmd is never started: a job asking for
3 nodes stays PENDING with Slurm's own reason, as on a busy cluster.

On simulated separate machines (``SlurmCluster(machines=m)``, tests/integration/machines.py),
slurmctld runs on the submitting machine at the bridge address and node ``nK`` is ``slurmd -N nK``
on machine K, with that machine's address as its ``NodeAddr`` and its hostname as its
``NodeHostname``. The cluster's folder (configuration, spool, state) is under the machines' root,
which every machine sees, and so is ``shared_dir``: the cluster's shared filesystem, while the
submitter's /tmp (its workspace) stays private.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from typing import Any

import psutil

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "srun")
MUNGE_KEY = "/etc/munge/munge.key"


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def _missing() -> list[str]:
    return [n for n in (*DAEMONS, *CLIENTS, "munge", "unmunge") if _which(n) is None]


def ensure_installed() -> None:
    """apt-get install slurm-wlm munge when they are missing and this is a root Debian machine."""
    if not _missing() or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=300, check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "slurm-wlm", "munge"], env=env, capture_output=True,
                   timeout=600, check=False)


def unavailable_reason() -> str | None:
    """Why a cluster cannot be started here (None when it can); tries to install first."""
    ensure_installed()
    missing = _missing()
    if missing:
        return f"Slurm/munge binaries missing ({', '.join(missing)}) and not installable: apt-get install slurm-wlm munge"
    if not os.path.exists(MUNGE_KEY):
        return f"{MUNGE_KEY} is missing (reinstall munge)"
    if os.geteuid() != 0:
        return "a throwaway Slurm cluster needs root here (SlurmUser=root)"
    return None


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(int(s.getsockname()[1]))
    for s in socks:
        s.close()
    return ports


def munge_works() -> bool:
    try:
        cred = subprocess.run([_which("munge") or "munge", "-n"], capture_output=True, timeout=10)
        if cred.returncode:
            return False
        check = subprocess.run([_which("unmunge") or "unmunge"], input=cred.stdout, capture_output=True, timeout=10)
        return check.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class SlurmCluster:
    """slurmctld plus ``nodes`` slurmd daemons (n1..nN), CPUs ``cpus`` each, partition ``debug``."""

    def __init__(self, nodes: int = 2, cpus: int = 2, machines: Any = None) -> None:
        self.machines = machines
        if machines is not None:
            nodes = machines.count
        self.nodes = [f"n{k + 1}" for k in range(nodes)]
        self.cpus = cpus
        self.host = socket.gethostname().split(".")[0]
        self.dir = ""
        self.shared_dir = ""
        self.conf = ""
        self.env: dict[str, str] = {}
        self.procs: list[subprocess.Popen[bytes]] = []
        self.started = False

    # ---- configuration -------------------------------------------------------------------------

    def _write_conf(self) -> None:
        d = self.dir
        ctld_port, *node_ports = _free_ports(1 + len(self.nodes) + 1)
        m = self.machines
        lines = [
            "ClusterName=torchyardtest",
            f"SlurmctldHost={self.host}({m.host_ip if m else '127.0.0.1'})",
            f"SlurmctldPort={ctld_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "MpiDefault=none",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            "KillWait=5",
            "SlurmdParameters=config_overrides",
            *(["SlurmdTimeout=10"] if m else []),  # a dead machine's node goes DOWN (and its jobs end) soon
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool/%n",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd-%n.pid",
            f"SlurmctldLogFile={d}/slurmctld.log",
            f"SlurmdLogFile={d}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
        ]
        # n3 is configured but never started: a 3-node job waits PENDING
        for k, (name, port) in enumerate(zip([*self.nodes, "n3"], node_ports, strict=True), start=1):
            if m is None:
                host, addr = self.host, "127.0.0.1"
            else:  # machine k (n3, never started, at an address nothing answers)
                host, addr = m.hostname(k), m.ip(k)
            lines.append(
                f"NodeName={name} NodeHostname={host} NodeAddr={addr} Port={port} CPUs={self.cpus} RealMemory=1000"
            )
        lines.append("PartitionName=debug Nodes=ALL Default=YES State=UP MaxTime=INFINITE")
        os.makedirs(f"{d}/state", exist_ok=True)
        for name in [*self.nodes, "n3"]:
            os.makedirs(f"{d}/spool/{name}", exist_ok=True)
        self.conf = os.path.join(d, "slurm.conf")
        with open(self.conf, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        self.env = dict(os.environ, SLURM_CONF=self.conf)

    # ---- lifecycle -----------------------------------------------------------------------------

    def _start_munged(self) -> None:
        if munge_works():
            return  # somebody's munged: use it, never stop it
        os.makedirs("/run/munge", exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        runuser = _which("runuser") or "/usr/sbin/runuser"
        self.procs.append(subprocess.Popen(
            [runuser, "-u", "munge", "--", _which("munged") or "munged", "-F"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ))
        deadline = time.time() + 15
        while not munge_works():
            if time.time() > deadline:
                raise RuntimeError("munged did not answer within 15 s")
            time.sleep(0.1)

    def _daemon(self, *argv: str, log: str) -> None:
        with open(os.path.join(self.dir, log), "ab") as out:
            self.procs.append(subprocess.Popen(list(argv), env=self.env, stdin=subprocess.DEVNULL,
                                               stdout=out, stderr=subprocess.STDOUT))

    def start(self) -> SlurmCluster:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.started = True
        # on machines: under their root (/var/tmp), which every machine sees; else under /tmp
        self.dir = tempfile.mkdtemp(prefix="tyslurm-", dir=self.machines.root if self.machines else "/tmp")
        self.shared_dir = os.path.join(self.dir, "shared")
        os.makedirs(self.shared_dir, exist_ok=True)
        self._write_conf()
        self._start_munged()
        self._daemon(_which("slurmctld") or "slurmctld", "-D", "-i", "-f", self.conf, log="slurmctld.out")
        for k, name in enumerate(self.nodes, start=1):
            argv = [_which("slurmd") or "slurmd", "-D", "-N", name, "-f", self.conf]
            if self.machines is None:
                self._daemon(*argv, log=f"slurmd-{name}.out")
            else:
                with open(os.path.join(self.dir, f"slurmd-{name}.out"), "ab") as out:
                    self.procs.append(self.machines.popen(k, argv, env=self.env, stdin=subprocess.DEVNULL,
                                                          stdout=out, stderr=subprocess.STDOUT))
        deadline = time.time() + 60
        while not all(self.node_state(n).startswith("IDLE") for n in self.nodes):
            dead = [p.args for p in self.procs if p.poll() is not None]
            if dead or time.time() > deadline:
                raise RuntimeError(
                    f"the Slurm cluster did not come up (exited: {dead}); states "
                    f"{[self.node_state(n) for n in self.nodes]}\n{self.log_tail()}"
                )
            time.sleep(0.2)
        return self

    def scontrol(self, *args: str) -> str:
        out = subprocess.run([_which("scontrol") or "scontrol", *args], env=self.env, capture_output=True,
                             text=True, timeout=30, check=False)
        return out.stdout

    def node_state(self, name: str) -> str:
        for field in self.scontrol("show", "node", name, "-o").split():
            if field.startswith("State="):
                return field[6:]
        return ""

    def jobs(self) -> list[str]:
        """Ids of the jobs squeue still lists."""
        out = subprocess.run([_which("squeue") or "squeue", "-h", "-o", "%i"], env=self.env, capture_output=True,
                             text=True, timeout=30, check=False)
        return out.stdout.split()

    def log_tail(self) -> str:
        parts = []
        for name in ("slurmctld.log", *(f"slurmd-{n}.log" for n in self.nodes)):
            try:
                with open(os.path.join(self.dir, name), errors="replace") as fh:
                    parts.append(f"--- {name}\n" + "".join(fh.readlines()[-15:]))
            except OSError:
                continue
        return "\n".join(parts)

    def stop(self) -> None:
        if not self.started:
            return
        if self.jobs():  # end what the tests left running, so no job step outlives its slurmd
            subprocess.run([_which("scancel") or "scancel", "--full", *self.jobs()], env=self.env,
                           capture_output=True, timeout=30, check=False)
            deadline = time.time() + 15
            while self.jobs() and time.time() < deadline:
                time.sleep(0.2)
        procs = []
        for p in self.procs:
            try:
                proc = psutil.Process(p.pid)
                procs.append(proc)
                procs.extend(proc.children(recursive=True))  # job steps slurmd left, if any
            except psutil.NoSuchProcess:
                continue
        for proc in reversed(procs):
            try:
                proc.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=10)
        for proc in alive:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        for p in self.procs:
            try:
                p.wait(timeout=1)
            except subprocess.TimeoutExpired:
                pass
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
        self.started = False

    def __enter__(self) -> SlurmCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
