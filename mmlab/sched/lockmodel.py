"""The scheduler's model of mmap_sem: MmapSem's rules, exactly, so the real lock never blocks.

In controlled mode no task ever waits inside the real lock: a task in down_read()/down_write()
is parked by the controller and runs again only when this model says MmapSem would let it in,
so the real attempt that follows always succeeds on its fast path.

The rules are those of mmlab.locking.rwsem.MmapSem, i.e. the kernel's rwsem: a down_*() first
*tries* -- it gets the lock at once if nobody is queued and the lock is compatible (a reader: no
writer holds it; a writer: nobody holds it). Otherwise it joins the tail of a FIFO wait list;
the head of the list gets the lock as soon as it is compatible, then the next one is the head.
So a queued writer blocks every reader that comes after it ("as soon as a writer gets queued on
that mmap_sem ... [it] blocks any new readers"), and a populate that drops the lock and takes
it again queues behind a waiting writer. down_read_trylock() succeeds only on the fast path.
downgrade_write() turns the writer into a reader, letting a reader at the head in.

A request takes effect when its task is next picked -- that is when the real task would try --
so a task preempted right at its schedule point has not asked yet.
"""

from __future__ import annotations

import collections
from typing import Optional

__all__ = ["RwsemModel", "LockWait"]


class RwsemModel:
    """Holders and the wait list of one MmapSem, as task indices."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.writer: Optional[int] = None
        self.readers: dict[int, int] = {}  # task -> read holds
        self.nreaders = 0
        self.queue: collections.deque[LockWait] = collections.deque()

    # ------------------------------------------------------------------ transitions
    def request(self, task: int, mode: str) -> "LockWait":
        """down_read()/down_write() is called: the task will try when it is next picked."""
        return LockWait(self, task, mode)

    def compatible(self, mode: str) -> bool:
        if mode == "R":
            return self.writer is None
        return self.writer is None and self.nreaders == 0

    def grant(self, task: int, mode: str) -> None:
        if mode == "W":
            self.writer = task
        else:
            self.readers[task] = self.readers.get(task, 0) + 1
            self.nreaders += 1

    def release(self, task: int, mode: str) -> None:
        if mode == "W":
            if self.writer != task:
                raise RuntimeError(f"{self.name}: task {task} releases a write hold it does not have")
            self.writer = None
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
        self.grant(task, "R")

    def trylock_read(self, task: int) -> bool:
        """down_read_trylock(): the fast path or nothing; it never jumps the queue."""
        if self.queue or not self.compatible("R"):
            return False
        self.grant(task, "R")
        return True

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
        if self.queue:
            parts.append("wait list: " + ", ".join(f"{names[w.task]} ({w.mode})" for w in self.queue))
        return f"{self.name}: " + ("; ".join(parts) if parts else "free")


class LockWait:
    """A task in down_read()/down_write(): when can it go on, and what does going on do."""

    __slots__ = ("model", "task", "mode", "queued")

    def __init__(self, model: RwsemModel, task: int, mode: str) -> None:
        self.model = model
        self.task = task
        self.mode = mode
        self.queued = False  # on the wait list (it tried and failed): MmapSem lists it in waiters

    def ready(self) -> bool:
        """A task that has not tried yet can always try; a queued one goes on at the head of the
        list once the lock is compatible."""
        if not self.queued:
            return True
        m = self.model
        return m.queue[0] is self and m.compatible(self.mode)

    def fast_path(self) -> bool:
        """Would the try succeed now (nobody queued, the lock compatible)?"""
        m = self.model
        return not m.queue and m.compatible(self.mode)

    def take(self) -> bool:
        """The task was picked: it gets the lock (True), or it tried, failed and joined the wait
        list (False: still parked)."""
        m = self.model
        if not self.queued:
            if not self.fast_path():
                self.queued = True
                m.queue.append(self)
                return False
        else:
            m.queue.popleft()
            self.queued = False
        m.grant(self.task, self.mode)
        return True

    def describe(self, names: Optional[list[str]] = None) -> str:
        m = self.model
        what = f"{'down_write' if self.mode == 'W' else 'down_read'}({m.name})"
        if not self.queued:
            return f"{what}: about to try"
        pos = list(m.queue).index(self) + 1
        if m.writer is not None:
            who = names[m.writer] if names else f"task {m.writer}"
            why = f"{who} holds it for write"
        elif self.mode == "W" and m.nreaders:
            why = f"{m.nreaders} read hold(s) must drain"
        else:
            why = "the tasks ahead of it go first"
        return f"{what}: queued, {pos} of {len(m.queue)} on the wait list; {why}"
