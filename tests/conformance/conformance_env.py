"""What a conformance case sees: one small call surface over the real kernel and over the model.

A case is a function ``body(env)`` written once. ``env.mm`` has the syscall methods of
:class:`mmlab.MM` (mmap, munmap, mprotect, mremap, mlock, mlock2, munlock, mlockall, munlockall,
madvise, mincore, remap_file_pages, touch); ``env`` adds what the source tests read back
(/proc/self/maps and smaps, VmLck, mincore), files and memfds, brk, RLIMIT_MEMLOCK and
CAP_IPC_LOCK. The same body runs

* on the real kernel (:class:`RealEnv`): in a forked child process, inside a
  :class:`~mmlab.real.backend.Region`, so that mlockall(), rlimits, dropped capabilities and brk
  stay in the child; the verdict comes back over a pipe as JSON;
* on the model (:class:`ModelEnv`): an ``MM(profile, ZERO_COSTS)`` with the same region layout
  at ``MODEL_BASE``.

``env.kernel`` is the profile being checked (the real kernel is v6.18): a case whose behaviour
changed between kernels reads the profile's switch, never its name.
"""

from __future__ import annotations

import ctypes
import errno as E
import json
import os
import platform
import resource
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from mmlab import MM, ZERO_COSTS, File, get_kernel
from mmlab.errors import SIGBUS, SIGSEGV, Signal
from mmlab.flags import MAP_ANONYMOUS, MAP_FIXED, MAP_NORESERVE, MAP_PRIVATE, PAGE_SIZE, PROT_NONE
from mmlab.kernels import Kernel

__all__ = ["P", "Case", "CASES", "case", "Env", "RealEnv", "ModelEnv", "run_real", "run_model",
           "RealFailure", "ModelFailure", "MODEL_BASE"]

P = PAGE_SIZE
MODEL_BASE = 0x1000_0000_0000
REAL_PROFILE = "v6.18"  # what this machine runs; the real side checks the cases' v6.18 expectations
BRK_NR = {"x86_64": 12, "aarch64": 214}


class RealFailure(AssertionError):
    """The real kernel does not do what the case says: a translation bug."""


class ModelFailure(AssertionError):
    """The model does not do what the real kernel does."""


@dataclass
class Case:
    """One translated test case. ``pages``: the size of the region; ``reserved``: keep the region
    mapped PROT_NONE (a carveout the case maps into with MAP_FIXED) instead of unmapping it;
    ``profiles``: the model profiles to check (more than one where the behaviour changed)."""

    name: str
    body: Callable[["Env"], None]
    source: str
    pages: int = 16
    reserved: bool = False
    profiles: tuple[str, ...] = (REAL_PROFILE,)


CASES: list[Case] = []


def case(name: str, source: str, pages: int = 16, reserved: bool = False,
         profiles: tuple[str, ...] = (REAL_PROFILE,)) -> Callable[[Callable[["Env"], None]], Callable[["Env"], None]]:
    """Register ``body`` as the case *name* (``"ltp mmap13"``); *source* is the file it comes
    from (``"ltp testcases/kernel/syscalls/mmap/mmap13.c"``)."""
    def deco(body: Callable[["Env"], None]) -> Callable[["Env"], None]:
        if any(c.name == name for c in CASES):
            raise ValueError(f"two cases named {name!r}")
        CASES.append(Case(name, body, source, pages, reserved, profiles))
        return body
    return deco


# ---------------------------------------------------------------------------- the environment
class Env:
    """What both sides offer. Addresses are absolute; ``env.at(i)`` is page *i* of the region."""

    side = ""
    mm: Any
    base: int
    pages: int
    kernel: Kernel

    def at(self, page: int) -> int:
        return self.base + page * P

    # -- outcomes
    def raises(self, err: int, fn: Callable[..., Any], *args: Any) -> None:
        """*fn(*args)* fails with errno *err*."""
        try:
            r = fn(*args)
        except OSError as e:
            if e.errno != err:
                raise AssertionError(f"{_call(fn, args)}: errno {E.errorcode.get(e.errno, e.errno)}, "
                                     f"expected {E.errorcode[err]}") from None
            return
        raise AssertionError(f"{_call(fn, args)} returned {_v(r)}, expected {E.errorcode[err]}")

    def segv(self, addr: int, write: bool = False) -> None:
        """A load (store) at *addr* raises SIGSEGV."""
        self._signal(SIGSEGV, addr, write)

    def sigbus(self, addr: int, write: bool = False) -> None:
        self._signal(SIGBUS, addr, write)

    def _signal(self, sig: type, addr: int, write: bool) -> None:
        try:
            self.mm.touch(addr, write)
        except Signal as s:
            if not isinstance(s, sig):
                raise AssertionError(f"touch({addr:#x}, write={write}): {s.name}, expected {sig.__name__}") from None
            return
        raise AssertionError(f"touch({addr:#x}, write={write}) succeeded, expected {sig.__name__}")

    # -- views
    def resident(self, addr: int, npages: int) -> list[int]:
        """mincore() of *npages* pages at *addr*, one 0/1 per page."""
        return list(self.mm.mincore(addr, npages * P))

    def vma(self, addr: int) -> Optional[tuple[int, int, str]]:
        """(start, end, perms) of the vma holding *addr*, as /proc/self/maps shows it."""
        return next(((s, e, p) for s, e, p in self.vmas(addr, addr + 1)), None)

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, str]]:
        raise NotImplementedError

    def locked_kb(self, addr: int) -> int:
        """smaps ``Locked`` of the vma holding *addr*."""
        raise NotImplementedError

    def pgoff(self, addr: int) -> int:
        """The file page that the page at *addr* maps (maps offset + distance into the vma)."""
        raise NotImplementedError

    def truncate(self, f: Any, size: int) -> None:
        """ftruncate() of a file from :meth:`file` or :meth:`memfd`."""
        raise NotImplementedError

    def bad_fd(self) -> Any:
        """A file descriptor that is not open (what mmap gets as its file)."""
        raise NotImplementedError

    def vmflags(self, addr: int) -> set[str]:
        """smaps ``VmFlags`` of the vma holding *addr*."""
        raise NotImplementedError

    def vm_lck_kb(self) -> int:
        """VmLck of /proc/self/status."""
        raise NotImplementedError

    # -- resources
    def file(self, size: int, mode: str = "rw") -> Any:
        """A regular file of *size* bytes on the disk's file system, not in the page cache,
        opened for *mode* ("r", "w", "rw"); what ``mm.mmap`` takes as its file."""
        raise NotImplementedError

    def memfd(self, size: int) -> Any:
        """memfd_create() + ftruncate(*size*): a shmem file with no pages yet."""
        raise NotImplementedError

    def drop_cap_ipc_lock(self) -> None:
        """Give up CAP_IPC_LOCK: RLIMIT_MEMLOCK applies from now on."""
        raise NotImplementedError

    def set_memlock(self, nbytes: int) -> None:
        """setrlimit(RLIMIT_MEMLOCK, nbytes) (soft and hard)."""
        raise NotImplementedError

    def brk(self, addr: int) -> int:
        """The brk system call: the new break, or the old one when it refuses."""
        raise NotImplementedError

    def own(self, start: int, end: int) -> None:
        """Let the calls act on [start, end) too (the real side refuses addresses it did not map)."""

    def close(self) -> None:
        pass


def _v(r: object) -> str:
    return hex(r) if isinstance(r, int) and r > 4096 else repr(r)


def _call(fn: Callable[..., Any], args: tuple) -> str:
    return f"{getattr(fn, '__name__', fn)}({', '.join(_v(a) if isinstance(a, int) else type(a).__name__ for a in args)})"


class ModelEnv(Env):
    side = "model"

    def __init__(self, c: Case, profile: str) -> None:
        self.kernel = get_kernel(profile)
        self.mm = MM(self.kernel, ZERO_COSTS)
        self.base = MODEL_BASE + P  # one guard page past a 2 MiB boundary, as a real Region starts
        self.pages = c.pages
        # the layout the real side has: the region and a one-page PROT_NONE guard at each end
        self.mm.mmap(self.base - P, (c.pages + 2) * P, PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED)
        if not c.reserved:
            self.mm.munmap(self.base, c.pages * P)
        self._n = 0

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, str]]:
        from mmlab.mm.vma import vm_flags_str
        return [(v.start, v.end, vm_flags_str(v.flags)[:4]) for v in self.mm.vmas.range(lo, hi)]

    def _smaps(self, addr: int) -> dict[str, object]:
        s = next((s for s in self.mm.smaps() if s["start"] <= addr < s["end"]), None)
        if s is None:
            raise AssertionError(f"no vma at {addr:#x}")
        return s

    def locked_kb(self, addr: int) -> int:
        return int(self._smaps(addr)["Locked"])  # type: ignore[call-overload]

    def vmflags(self, addr: int) -> set[str]:
        return set(str(self._smaps(addr)["VmFlags"]).split())

    def vm_lck_kb(self) -> int:
        return self.mm.vm_lck_kb()

    def pgoff(self, addr: int) -> int:
        fp = self.mm.file_page(addr)
        if fp is None:
            raise AssertionError(f"no file mapping at {addr:#x}")
        return fp[1]

    def truncate(self, f: File, size: int) -> None:
        f.truncate(size)

    def bad_fd(self) -> None:
        return None

    def file(self, size: int, mode: str = "rw") -> File:
        self._n += 1
        return File(f"f{self._n}", size, mode)

    def memfd(self, size: int) -> File:
        self._n += 1
        return File(f"memfd{self._n}", size, "rw", holes=True)

    def drop_cap_ipc_lock(self) -> None:
        self.mm.cap_ipc_lock = False

    def set_memlock(self, nbytes: int) -> None:
        self.mm.rlimit_memlock = nbytes

    def brk(self, addr: int) -> int:
        return self.mm.brk(addr)


class RealEnv(Env):
    side = "real"

    def __init__(self, region: Any) -> None:
        from mmlab.real.diff import file_dir
        self.kernel = get_kernel(REAL_PROFILE)
        self.region = region
        self.mm = region.mm
        self.base = region.base
        self.pages = region.size // P
        self._dir = file_dir()
        self._files: list[Any] = []
        self._fds: list[int] = []

    def vmas(self, lo: int, hi: int) -> list[tuple[int, int, str]]:
        from mmlab.real.procfs import read_maps
        return [(e.start, e.end, e.perms) for e in read_maps(lo, hi)]

    def _smaps(self, addr: int) -> Any:
        from mmlab.real.procfs import read_smaps
        e = next((e for e in read_smaps(addr, addr + 1) if e.start <= addr < e.end), None)
        if e is None:
            raise AssertionError(f"no vma at {addr:#x}")
        return e

    def locked_kb(self, addr: int) -> int:
        return int(self._smaps(addr).locked_kb)

    def vmflags(self, addr: int) -> set[str]:
        return set(self._smaps(addr).vmflags)

    def vm_lck_kb(self) -> int:
        from mmlab.real.procfs import read_vm_lck_kb
        return read_vm_lck_kb()

    def pgoff(self, addr: int) -> int:
        e = self._smaps(addr)
        if not e.name or e.name.startswith("["):
            raise AssertionError(f"no file mapping at {addr:#x}")
        return (e.offset + (addr & ~(P - 1)) - e.start) // P

    def truncate(self, f: Any, size: int) -> None:
        os.ftruncate(f if isinstance(f, int) else f.fd, size)

    def bad_fd(self) -> int:
        fd = os.open("/dev/null", os.O_RDONLY)
        os.close(fd)
        return fd

    def file(self, size: int, mode: str = "rw") -> Any:
        from mmlab.real.backend import RealFile
        fd, path = tempfile.mkstemp(prefix="mmlab-conf-", dir=self._dir)
        os.close(fd)
        f = RealFile(path, size, mode)
        self._files.append(f)
        f.drop_cache()
        return f

    def memfd(self, size: int) -> int:
        fd = os.memfd_create("mmlab-conf")
        os.ftruncate(fd, size)
        self._fds.append(fd)
        return fd

    def drop_cap_ipc_lock(self) -> None:
        """capset() with empty sets: the uid stays 0 (files stay reachable), the capability goes."""
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]
        lib = ctypes.CDLL(None, use_errno=True)
        hdr = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
        data = (Data * 2)()
        if lib.capset(ctypes.byref(hdr), data) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e), "capset")

    def set_memlock(self, nbytes: int) -> None:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (nbytes, nbytes))

    def brk(self, addr: int) -> int:
        lib = self.mm.lib
        return int(lib._syscall(BRK_NR[platform.machine()], addr, 0, 0, 0, 0, 0)) & ((1 << 64) - 1)

    def own(self, start: int, end: int) -> None:
        self.mm.own(start, end)

    def close(self) -> None:
        for f in self._files:
            f.close()
        for fd in self._fds:
            os.close(fd)


# ---------------------------------------------------------------------------- running
def run_model(c: Case, profile: str) -> None:
    """The case on the model profile *profile*; a failure raises :class:`ModelFailure`."""
    env = ModelEnv(c, profile)
    try:
        c.body(env)
    except ModelFailure:
        raise
    except BaseException as e:  # noqa: BLE001 -- every way the case fails is the model's
        raise ModelFailure(f"{c.name} on model {profile}: {type(e).__name__}: {e}\n"
                           f"{''.join(traceback.format_exc(limit=-4))}") from None


def run_real(c: Case) -> None:
    """The case on this machine's kernel, in a forked child; a failure raises :class:`RealFailure`."""
    from mmlab.real.diff import file_dir
    from mmlab.real.libc import libc
    file_dir()  # computed once here, not in every child
    libc()
    r, w = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with other threads alive
        pid = os.fork()
    if pid == 0:  # the child: run, report, and leave without running the parent's atexit work
        code = 1
        try:
            os.close(r)
            msg = _child(c)
            os.write(w, json.dumps(msg).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        raise RealFailure(f"{c.name} on the real kernel: the child was killed by signal {os.WTERMSIG(status)}")
    try:
        msg = json.loads(b"".join(chunks) or b"{}")
    except ValueError:
        msg = {}
    if not msg:
        raise RealFailure(f"{c.name} on the real kernel: the child exited with status {os.WEXITSTATUS(status)} "
                          f"and no verdict")
    if not msg["ok"]:
        raise RealFailure(f"{c.name} on the real kernel {os.uname().release}: {msg['error']}")


def _child(c: Case) -> dict[str, Any]:
    from mmlab.real.backend import Region
    try:
        with Region(c.pages * P, keep_reserved=c.reserved) as reg:
            env = RealEnv(reg)
            try:
                c.body(env)
            finally:
                env.close()
    except BaseException as e:  # noqa: BLE001 -- reported to the parent
        return {"ok": False, "error": f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=-4)}"}
    return {"ok": True}
