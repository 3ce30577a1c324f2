"""What a job's engine process may touch, enforced by the kernel (Linux Landlock).

A job runs other people's code: a teacher is a compiled program, a spec names files. The
operator allowlist (``core.opcheck``) keeps known side effects out of uploaded programs; this is
the layer under it, for whatever gets past: the engine process is confined, before it reads the
job's spec or any of its inputs (and, started afresh, before it imports torch; forked by the
engine server, after the engine's imports, which read only the installation), to

- read and execute: the Python installation and its packages, the project's engine code
  (``core/``, ``worker/``), the system's libraries (``/usr``, ``/lib*``), and a few system files
  libraries read (``/etc/ld.so.cache``, CPU and memory facts under ``/proc`` and ``/sys``);
- read: the data root (except other uploads: only the upload files its spec names), its own
  ``/proc/<pid>``, and GPU device facts when there are GPUs;
- read and write: its own working directory (checkpoints, exports, a private ``TMPDIR``),
  ``/dev/null``, ``/dev/shm`` (DataLoader workers share batches through it) and the GPU device
  files;
- nothing else: no other file (not the service's database, its settings, another job's
  directory, ``/etc/passwd``), no TCP connection or listening port (ABI 4+), no signal to a
  process outside the job and no abstract Unix socket (ABI 6+).

Where the kernel has no Landlock (before 5.13, or disabled at boot), ``DISTILLERY_SANDBOX``
decides: ``auto`` (the default) runs the job unconfined and says so in the worker's log and in
the job's events; ``required`` fails the job as ``sandbox_unavailable``; ``off`` never confines
(for debugging). Rights a kernel lacks (network before ABI 4, scopes before ABI 6) are dropped,
best effort, and the worker logs what was enforced.
"""

from __future__ import annotations

import ctypes
import fcntl
import glob
import os
import socket
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

import landlockpy
from landlockpy import AccessFS, AccessNet, Ruleset, Scope

from core.paths import UPLOADS

READ = AccessFS.READ_FILE | AccessFS.READ_DIR
READ_EXEC = READ | AccessFS.EXECUTE
WRITE = (
    READ
    | AccessFS.WRITE_FILE
    | AccessFS.REMOVE_DIR
    | AccessFS.REMOVE_FILE
    | AccessFS.MAKE_DIR
    | AccessFS.MAKE_REG
    | AccessFS.TRUNCATE
    | AccessFS.REFER
)
DEVICE = READ | AccessFS.WRITE_FILE | AccessFS.IOCTL_DEV
FILE_RIGHTS = (
    AccessFS.EXECUTE | AccessFS.WRITE_FILE | AccessFS.READ_FILE | AccessFS.TRUNCATE | AccessFS.IOCTL_DEV
)
PROJECT = Path(__file__).resolve().parents[1]
SYSTEM_CODE = ("/usr", "/lib", "/lib32", "/lib64", "/bin", "/sbin", "/usr/local/cuda")
SYSTEM_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/fonts",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/sys/kernel/osrelease",
    "/proc/driver/nvidia",
    "/sys/devices/system/cpu",
    "/sys/devices/system/node",
    "/sys/fs/cgroup",
    "/sys/bus/pci",
    "/sys/devices/pci0000:00",
    "/dev/urandom",
    "/dev/random",
)


CLONE_NEWUSER, CLONE_NEWNET = 0x10000000, 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


class SandboxUnavailable(RuntimeError):
    """The kernel cannot confine the engine, and the settings require it."""


@dataclass
class Policy:
    """The paths a job's engine process may use, by kind of access."""

    read_exec: list[Path] = field(default_factory=list)
    read: list[Path] = field(default_factory=list)
    write: list[Path] = field(default_factory=list)
    devices: list[Path] = field(default_factory=list)


def policy_for(out_dir: Path, data_root: Path, inputs: list[Path]) -> Policy:
    """The policy of one job: ``inputs`` are the files under ``uploads/`` its spec names."""
    python = {Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix)}
    site = {Path(p) for p in sys.path if p and Path(p).is_dir() and not _contains(p, PROJECT)}
    data = [p for p in data_root.iterdir() if p.name != UPLOADS] if data_root.is_dir() else []
    return Policy(
        read_exec=[*python, *site, PROJECT / "core", PROJECT / "worker", *map(Path, SYSTEM_CODE)],
        read=[*map(Path, SYSTEM_FILES), Path(f"/proc/{os.getpid()}"), *data, *inputs],
        write=[out_dir, Path("/dev/null"), Path("/dev/shm")],
        devices=[Path(p) for p in glob.glob("/dev/nvidia*")],
    )


def _contains(path: str, project: Path) -> bool:
    """``path`` is the project's root or above it (granting it would open runs/, data/, ...)."""
    try:
        return project.is_relative_to(Path(path).resolve())
    except OSError:
        return True


def abi() -> int:
    return landlockpy.abi_version()


def isolate_network() -> None:
    """Move this process (and every process it starts) into a network namespace of its own with
    only a loopback interface: the ranks of a data-parallel job reach each other over TCP on
    127.0.0.1, and nothing else. Needs user namespaces (unprivileged ones, or root); call it
    before any thread starts. Raises ``SandboxUnavailable`` where the kernel refuses."""
    uid, gid = os.getuid(), os.getgid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0:
        raise SandboxUnavailable(f"no network namespace for the job: {os.strerror(ctypes.get_errno())}")
    try:
        Path("/proc/self/setgroups").write_text("deny")
        Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
        Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack("16sH14x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))
    except OSError as e:
        raise SandboxUnavailable(f"the job's network namespace has no loopback: {e}") from None


def confine(policy: Policy, *, tcp: bool = False) -> str:
    """Enforce ``policy`` on this process (and every process it starts); irreversible. Returns
    what was enforced, for the log. Raises ``SandboxUnavailable`` without Landlock.

    ``tcp``: leave TCP unconfined, for a data-parallel job whose ranks talk over loopback; only
    after ``isolate_network``, which leaves them nothing else to reach."""
    version = abi()
    if version < 1:
        raise SandboxUnavailable("this kernel has no Landlock (Linux 5.13+ with Landlock enabled)")
    scopes = Scope.ABSTRACT_UNIX_SOCKET | Scope.SIGNAL
    handled = AccessNet(0) if tcp else AccessNet.BIND_TCP | AccessNet.CONNECT_TCP
    with Ruleset(handled_net=handled, scoped=scopes) as ruleset:
        for paths, access in (
            (policy.read_exec, READ_EXEC),
            (policy.read, READ),
            (policy.write, WRITE),
            (policy.devices, DEVICE),
        ):
            for path in paths:
                if path.exists():
                    # a rule on a file takes only the rights that apply to files
                    ruleset.allow_path(path, access if path.is_dir() else access & FILE_RIGHTS)
        ruleset.restrict()
        if tcp:
            net = "TCP only inside the job's own network namespace"
        else:
            net = "no TCP" if ruleset.handled_net else "TCP not confined (ABI < 4)"
        scoped = "scoped signals and sockets" if ruleset.scoped else "unscoped (ABI < 6)"
    return f"Landlock ABI {version}: files confined, {net}, {scoped}"
