"""The scheduler's model of mmap_sem's queue: readerwriterlock.RWLockFairD's rules, exactly.

In controlled mode no task ever blocks inside the real lock: a task that asks for it is parked by
the controller and becomes runnable only when this model says the real lock would let it in, so
the real non-blocking acquire that follows always succeeds.

RWLockFairD has a turnstile (its ``c_lock_read``) and the lock proper (``c_lock_write``, held by
one writer or by the readers as a group). A reader passes the turnstile and joins the group; a
writer takes the turnstile and keeps it while it waits for the readers to drain and while it
holds the lock, so every reader (and writer) that arrives after a queued writer waits too -- "as
soon as a writer gets queued on that mmap_sem ... [it] blocks any new readers". Who gets a free
turnstile first is up to the OS in free mode; here it is up to the scheduler. downgrade_write()
gives the turnstile back and turns the writer into a reader.
"""

from __future__ import annotations

from typing import Optional

__all__ = ["RwsemModel", "LockWait"]


class RwsemModel:
    """Holders and the turnstile of one MmapSem, as task indices."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.turnstile: Optional[int] = None  # a writer queued for, or holding, the lock
        self.writer: Optional[int] = None
        self.readers: dict[int, int] = {}  # task -> read holds (a task may nest them)
        self.nreaders = 0

    # ------------------------------------------------------------------ transitions
    def request(self, task: int, mode: str) -> "LockWait":
        """down_read()/down_write() called: a writer takes a free turnstile at once."""
        w = LockWait(self, task, mode)
        if mode == "W" and self.turnstile is None:
            self.turnstile = task
            w.has_turnstile = True
        w.immediate = w.ready()
        return w

    def release(self, task: int, mode: str) -> None:
        if mode == "W":
            if self.writer != task:
                raise RuntimeError(f"{self.name}: task {task} releases a write hold it does not have")
            self.writer = None
            self.turnstile = None
        else:
            n = self.readers.get(task, 0)
            if not n:
                raise RuntimeError(f"{self.name}: task {task} releases a read hold it does not have")
            if n == 1:
                del self.readers[task]
            else:
                self.readers[task] = n - 1
            self.nreaders -= 1

    def downgrade(self, task: int) -> None:
        if self.writer != task:
            raise RuntimeError(f"{self.name}: task {task} downgrades a write hold it does not have")
        self.writer = None
        self.turnstile = None
        self._add_reader(task)

    def trylock_read(self, task: int) -> bool:
        """down_read_trylock(): in only if the turnstile is free (no writer queued or holding)."""
        if self.turnstile is not None:
            return False
        self._add_reader(task)
        return True

    def _add_reader(self, task: int) -> None:
        self.readers[task] = self.readers.get(task, 0) + 1
        self.nreaders += 1

    # ------------------------------------------------------------------ views
    def holds(self, task: int) -> str:
        if self.writer == task:
            return "W"
        return "R" if task in self.readers else ""

    def describe(self, names: list[str]) -> str:
        parts = []
        if self.writer is not None:
            parts.append(f"held for write by {names[self.writer]}")
        if self.readers:
            parts.append("held for read by " + ", ".join(
                f"{names[t]}{' x%d' % n if n > 1 else ''}" for t, n in sorted(self.readers.items())))
        if self.turnstile is not None and self.writer is None:
            parts.append(f"turnstile taken by {names[self.turnstile]} (a queued writer: new readers wait)")
        return f"{self.name}: " + ("; ".join(parts) if parts else "free")


class LockWait:
    """A task parked in down_read()/down_write(): when can it go on, and what does going on do."""

    __slots__ = ("model", "task", "mode", "has_turnstile", "immediate")

    def __init__(self, model: RwsemModel, task: int, mode: str) -> None:
        self.model = model
        self.task = task
        self.mode = mode
        self.has_turnstile = False  # this request (a writer's) holds the turnstile
        self.immediate = False  # it could be granted the moment it was made

    def ready(self) -> bool:
        m = self.model
        if self.mode == "R":
            return m.turnstile is None
        if self.has_turnstile:
            return m.nreaders == 0
        return m.turnstile is None

    def take(self) -> bool:
        """The task was picked: grant the lock (True) or, for a writer that only got the
        turnstile and must still wait for readers to drain, take the turnstile (False)."""
        m = self.model
        if self.mode == "R":
            m._add_reader(self.task)
            return True
        if not self.has_turnstile:
            m.turnstile = self.task
            self.has_turnstile = True
        if m.nreaders:
            return False
        m.writer = self.task
        return True

    def describe(self) -> str:
        m = self.model
        what = "down_write" if self.mode == "W" else "down_read"
        if self.has_turnstile:
            return f"{what}({m.name}): holds the turnstile, waits for {m.nreaders} read hold(s) to drain"
        return f"{what}({m.name}): waits for the turnstile"
