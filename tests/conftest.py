"""Shared fixtures: a fresh model per test, threads that are always joined, printed seeds, and a
check after every test that it left the process's real state as it found it."""

from __future__ import annotations

import ctypes
import glob
import os
import random
import resource
import sys
import threading
from typing import Callable, Iterator, Optional

import pytest

from mmlab import MM, ZERO_COSTS, KERNELS

ALL_KERNELS = list(KERNELS)
pytest_plugins = ("pytester",)


# ---------------------------------------------------------------------------- process-wide state
# What a test may change for the whole process (the real backend and the real-kernel scenarios do):
# locked memory and mlockall(MCL_FUTURE), resource limits, and tracing instances named mmlab-*.
# The program break is not checked: glibc's malloc moves it itself (the main arena), so a
# difference would not mean a test leaked it. Locked memory is read cheaply from VmLck (the
# mm's locked_vm); when that moved, smaps_rollup's Locked (pages really in VM_LOCKED vmas) decides:
# 6.18's mremap(MREMAP_DONTUNMAP) of a locked vma leaves locked_vm raised with nothing locked (a
# documented difference of `mmlab diff`), which no test can undo and is not a leak.
_RLIMITS = sorted((n, getattr(resource, n)) for n in dir(resource) if n.startswith("RLIMIT_"))
_TRACING = "/sys/kernel/tracing/instances"
_libc: Optional[ctypes.CDLL] = None


def _vm_lck_kb() -> int:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmLck:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _locked_now_kb() -> int:
    """smaps_rollup's Locked: kB of pages in VM_LOCKED vmas, summed by the kernel."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            for line in f:
                if line.startswith("Locked:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _future_locked() -> bool:
    """Is mlockall(MCL_FUTURE) in force? A new one-page mapping is then locked: VmLck grows."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.mmap.restype = ctypes.c_void_p
        _libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int,
                               ctypes.c_long]
        _libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    before = _vm_lck_kb()
    a = _libc.mmap(None, 4096, 3, 0x22, -1, 0)  # PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS
    if a in (None, ctypes.c_void_p(-1).value):
        return False
    try:
        return _vm_lck_kb() > before
    finally:
        _libc.munmap(a, 4096)


def _tracing_instances() -> list[str]:
    return sorted(os.path.basename(p) for p in glob.glob(f"{_TRACING}/mmlab-*-{os.getpid()}-*"))


def process_state() -> dict[str, object]:
    """The process-wide real state a test must leave as it found it."""
    st: dict[str, object] = {"VmLck kB": _vm_lck_kb(), "mlockall(MCL_FUTURE)": _future_locked(),
                             "tracing instances": _tracing_instances()}
    for name, res in _RLIMITS:
        st[name] = resource.getrlimit(res)
    return st


def _restore(before: dict[str, object], after: dict[str, object]) -> None:
    """Undo a leak so the next test starts clean (the leaking test still fails)."""
    if after["VmLck kB"] != before["VmLck kB"] or after["mlockall(MCL_FUTURE)"] != before["mlockall(MCL_FUTURE)"]:
        if _libc is not None and not before["VmLck kB"] and not before["mlockall(MCL_FUTURE)"]:
            _libc.munlockall()
    for name, res in _RLIMITS:
        if after[name] != before[name]:
            try:
                resource.setrlimit(res, before[name])  # type: ignore[arg-type]
            except (ValueError, OSError):
                pass
    for inst in set(after["tracing instances"]) - set(before["tracing instances"]):  # type: ignore[arg-type]
        try:
            os.rmdir(f"{_TRACING}/{inst}")
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _restores_process_state(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test leaves locked memory, mlockall, rlimits and its tracing instances as it found
    them; one that does not fails here, by name, and the state is put back for the next test."""
    if not sys.platform.startswith("linux"):
        yield
        return
    before = process_state()
    yield
    after = process_state()
    leaked = {k: (before[k], after[k]) for k in before if after[k] != before[k]}
    if "VmLck kB" in leaked:
        locked = _locked_now_kb()
        if locked and locked != before["VmLck kB"]:
            leaked["VmLck kB"] = (before["VmLck kB"], f"{after['VmLck kB']} ({locked} kB of pages locked)")
        else:  # the counter moved with nothing locked: see above
            del leaked["VmLck kB"]
    if leaked:
        _restore(before, after)
        pytest.fail(f"{request.node.nodeid} changed process-wide state and did not restore it: "
                    + "; ".join(f"{k}: {b!r} before, {a!r} after" for k, (b, a) in leaked.items()), pytrace=False)


_REAL_DIRS = tuple(os.path.join(os.path.dirname(__file__), d) for d in ("real", "conformance"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that run on this machine's kernel (tests/real, tests/conformance) are marked `real`
    and skipped, with the reason, where the real-kernel backend cannot run."""
    from mmlab.real.libc import unavailable_reason
    why = unavailable_reason()
    for item in items:
        if str(item.fspath).startswith(_REAL_DIRS):
            item.add_marker(pytest.mark.real)
            if why:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(autouse=True, scope="session")
def _switch_interval() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)
    yield
    sys.setswitchinterval(old)


@pytest.fixture(autouse=True)
def _no_user_cost_profile(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands resolve a cost profile from $MMLAB_COSTS or ~/.config/mmlab/costs.toml: tests see
    neither the user's profile nor ever write there -- an empty config home of their own."""
    monkeypatch.delenv("MMLAB_COSTS", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config-home")))


@pytest.fixture
def mm() -> MM:
    """A v6.18 model with zero costs."""
    return MM("v6.18", ZERO_COSTS)


@pytest.fixture(params=ALL_KERNELS)
def kmm(request: pytest.FixtureRequest) -> MM:
    """A zero-cost model for every kernel profile."""
    return MM(request.param, ZERO_COSTS)


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A seed for this test's random choices; printed in the report when the test fails."""
    s = int(os.environ.get("MMLAB_SEED", random.randrange(1 << 31)))
    request.node.user_properties.append(("seed", s))
    print(f"seed={s}")
    return s


class ThreadGroup:
    """Start threads that are joined at teardown; their exceptions fail the test."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, fn: Callable[[], object], name: str = "") -> threading.Thread:
        def run() -> None:
            try:
                fn()
            except BaseException as e:  # noqa: BLE001 - reported at join
                self.errors.append(e)

        t = threading.Thread(target=run, name=name or fn.__name__, daemon=True)
        self.threads.append(t)
        t.start()
        return t

    def join(self, timeout: float = 60) -> None:
        for t in self.threads:
            t.join(timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"threads still running: {alive}"
        if self.errors:
            raise self.errors[0]


@pytest.fixture
def threads() -> Iterator[ThreadGroup]:
    g = ThreadGroup()
    yield g
    g.join()
