"""tracefs: finding (or mounting) it, and one private tracing instance per capture.

A capture never touches the top-level buffer: it makes ``instances/mmlab-<name>-<pid>-<n>``, which
has its own ring buffer, event set, pid filter and ``trace_pipe`` (kernel/trace/trace.c,
``instance_mkdir``), so parallel test workers and other tracing users do not see each other's
events. :meth:`Instance.remove` disables everything and ``rmdir``s it; :class:`Capture` calls it
on every exit path.
"""

from __future__ import annotations

import errno
import itertools
import os
import subprocess
import sys
import time
from typing import Iterable, Optional

__all__ = ["TRACEFS", "LOCK_EVENTS", "MM_SYSCALLS", "FAULT_EVENT", "tracefs_root", "unavailable_reason",
           "Instance", "instances_of_mine", "instance_pid", "reap_dead_instances"]

TRACEFS = "/sys/kernel/tracing"
_FALLBACK = "/sys/kernel/debug/tracing"

LOCK_EVENTS = ("mmap_lock:mmap_lock_start_locking", "mmap_lock:mmap_lock_acquire_returned",
               "mmap_lock:mmap_lock_released")
# The calls that take mm->mmap_lock on purpose (mm/mmap.c, mm/mlock.c, mm/mremap.c, ...).
MM_SYSCALLS = ("mmap", "munmap", "mprotect", "mremap", "brk", "mlock", "mlock2", "munlock", "mlockall",
               "munlockall", "remap_file_pages", "madvise", "mincore")
FAULT_EVENT = "exceptions:page_fault_user"

_seq = itertools.count(1)
_INIT_PID_NS = 0xEFFFFFFC  # PROC_PID_INIT_INO: /proc/self/ns/pid's inode in the initial pid namespace


def _is_tracefs(path: str) -> bool:
    return os.path.isdir(os.path.join(path, "instances")) and os.path.exists(os.path.join(path, "trace_pipe"))


def tracefs_root(mount: bool = True) -> Optional[str]:
    """The tracefs mount point; mounts it at /sys/kernel/tracing when it is not mounted and
    *mount* is true (needs root). None when there is none."""
    for p in (TRACEFS, _FALLBACK):
        try:
            if _is_tracefs(p):
                return p
        except OSError:
            continue
    if mount and os.path.isdir(TRACEFS) and os.geteuid() == 0:
        r = subprocess.run(["mount", "-t", "tracefs", "nodev", TRACEFS], capture_output=True, text=True)
        if r.returncode == 0 and _is_tracefs(TRACEFS):
            return TRACEFS
    return None


def unavailable_reason(mount: bool = True) -> Optional[str]:
    """None when mmap_lock tracing works here, else a one-line reason."""
    if not sys.platform.startswith("linux"):
        return f"not Linux ({sys.platform}): no tracefs"
    if os.geteuid() != 0:
        return "not root: tracing instances need root"
    root = tracefs_root(mount)
    if root is None:
        return f"no tracefs at {TRACEFS} and it could not be mounted"
    ev = os.path.join(root, "events")
    for e in LOCK_EVENTS:
        if not os.path.isdir(os.path.join(ev, *e.split(":"))):
            return f"this kernel has no {e} event (needs CONFIG_TRACING and Linux >= 5.10)"
    if not os.access(os.path.join(root, "instances"), os.W_OK):
        return f"{root}/instances is not writable"
    return None


def instances_of_mine(root: Optional[str] = None) -> list[str]:
    """Names of the mmlab-* instances left under tracefs (should be empty when nothing runs)."""
    root = root or tracefs_root(False)
    if root is None:
        return []
    try:
        return sorted(n for n in os.listdir(os.path.join(root, "instances")) if n.startswith("mmlab-"))
    except OSError:
        return []


def instance_pid(name: str) -> Optional[int]:
    """The pid in an instance name ``mmlab-<name>-<pid>-<n>`` (<name> has no dash); None if not one."""
    parts = name.split("-")
    if len(parts) != 4 or parts[0] != "mmlab" or not parts[2].isdigit() or not parts[3].isdigit():
        return None
    return int(parts[2])


def _rmdir_instance(path: str) -> Optional[str]:
    """Tracing off, events off, pid filter cleared, rmdir (retrying EBUSY for 1 s: a reader that
    still has a pipe open). None when the directory is gone, else why it is not."""
    for rel, text in (("tracing_on", "0"), ("set_event", ""), ("set_event_pid", "")):
        fd = -1
        try:
            fd = os.open(os.path.join(path, rel), os.O_WRONLY | os.O_TRUNC)
            if text:  # O_TRUNC alone clears set_event and set_event_pid
                os.write(fd, text.encode())
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)
    why = None
    for _ in range(50):
        try:
            os.rmdir(path)
            return None
        except FileNotFoundError:
            return None
        except OSError as e:  # EBUSY while a reader still has trace_pipe open
            why = f"rmdir {path}: {e.strerror or e} (errno {e.errno})"
            if e.errno != errno.EBUSY:
                break
            time.sleep(0.02)
    return why if os.path.isdir(path) else None


def reap_dead_instances(root: Optional[str] = None) -> list[str]:
    """Remove the ``mmlab-*-<pid>-<n>`` instances whose process is gone (an mmlab killed by
    SIGKILL runs no cleanup). Returns the names removed; an instance of a live pid is left alone,
    and nothing is reaped from inside a child pid namespace (another namespace's pids are not in
    its /proc: their owners would look dead)."""
    root = root or tracefs_root(False)
    out: list[str] = []
    try:
        if os.stat("/proc/self/ns/pid").st_ino != _INIT_PID_NS:
            return out
    except OSError:
        return out
    for n in instances_of_mine(root):
        pid = instance_pid(n)
        if pid is None or pid == os.getpid() or os.path.exists(f"/proc/{pid}"):
            continue
        if _rmdir_instance(os.path.join(root, "instances", n)) is None:  # type: ignore[arg-type]
            out.append(n)
    return out


class Instance:
    """One private tracing instance: ``instances/mmlab-<name>-<pid>-<n>``.

    Created by :meth:`create` (mkdir), configured with :meth:`write`, removed by :meth:`remove`
    (tracing off, events off, rmdir; idempotent, never raises: :attr:`created` stays true and
    :attr:`remove_error` says why when the directory is still there). :meth:`create` first removes
    the instances that dead mmlab processes left (:func:`reap_dead_instances`)."""

    def __init__(self, name: str = "capture", root: Optional[str] = None) -> None:
        r = root or tracefs_root()
        if r is None:
            raise OSError(errno.ENOENT, "no tracefs")
        self.root = r
        safe = "".join(c if c.isalnum() or c in "_." else "_" for c in name)[:40] or "capture"
        self.name = f"mmlab-{safe}-{os.getpid()}-{next(_seq)}"
        self.path = os.path.join(r, "instances", self.name)
        self.created = False
        self.remove_error: Optional[str] = None
        self.reaped: list[str] = []

    def create(self) -> "Instance":
        self.reaped = reap_dead_instances(self.root)
        os.mkdir(self.path)
        self.created = True
        return self

    def file(self, rel: str) -> str:
        return os.path.join(self.path, rel)

    def write(self, rel: str, text: str, append: bool = False) -> None:
        fd = os.open(self.file(rel), os.O_WRONLY | (os.O_APPEND if append else os.O_TRUNC))
        try:
            data = text.encode()
            while data:  # set_event and set_event_pid take one word per write() and say so
                n = os.write(fd, data)
                if n <= 0:
                    break
                data = data[n:]
        finally:
            os.close(fd)

    def read(self, rel: str) -> str:
        with open(self.file(rel)) as f:
            return f.read()

    def has_event(self, event: str) -> bool:
        return os.path.isdir(os.path.join(self.root, "events", *event.split(":")))

    def enable_events(self, events: Iterable[str]) -> list[str]:
        """Enable *events* (those this kernel has); returns the enabled ones."""
        ok = [e for e in events if self.has_event(e)]
        self.write("set_event", " ".join(ok))
        return ok

    def set_pids(self, pids: Iterable[int]) -> None:
        self.write("set_event_pid", " ".join(str(p) for p in pids))

    def cpus(self) -> list[int]:
        out = []
        for n in os.listdir(self.file("per_cpu")):
            if n.startswith("cpu") and n[3:].isdigit():
                out.append(int(n[3:]))
        return sorted(out)

    def overruns(self) -> dict[int, Optional[int]]:
        """Events lost per CPU: ``overrun`` (overwritten, or never written) plus ``dropped events``
        (per_cpu/cpuN/stats, kernel/trace/trace.c tracing_stats_read). None for a CPU whose stats
        could not be read (or lack both lines): its loss is unknown, never 0."""
        lost: dict[int, Optional[int]] = {}
        for c in self.cpus():
            try:
                text = self.read(f"per_cpu/cpu{c}/stats")
            except OSError:
                lost[c] = None
                continue
            n: Optional[int] = None
            for line in text.splitlines():
                k, _, v = line.partition(":")
                k = k.strip()
                if k in ("overrun", "dropped events"):
                    try:
                        n = (n or 0) + int(v.strip())
                    except ValueError:
                        n = None
                        break
            lost[c] = n
        return lost

    def remove(self) -> None:
        """Tracing off, events off, pid filter cleared, rmdir. Never raises; idempotent. When the
        directory is still there afterwards, :attr:`created` stays true and :attr:`remove_error`
        says why (the caller reports it)."""
        if not self.created:
            return
        self.remove_error = _rmdir_instance(self.path)
        self.created = os.path.isdir(self.path)
        if self.created and self.remove_error is None:
            self.remove_error = f"{self.path} is still there after rmdir"
