"""The kernel's own mmap_lock events, read from tracefs and turned into the model's records.

``from mmlab.trace import unavailable_reason, Capture, Trace`` -- see /work/notes/trace.md and the
modules: :mod:`tracefs` (instances), :mod:`parse` (the trace_pipe text), :mod:`records` (lock and
call records), :mod:`capture` (the reader), :mod:`decode` (arguments as text), :mod:`analysis`
(waits, holders, per-thread statistics).
"""

from mmlab.trace.capture import Capture, CaptureError, TraceUnavailable, process_tids
from mmlab.trace.records import CallRecord, Trace, TracedLock, TracedTask, build_trace, records_from_lines
from mmlab.trace.tracefs import LOCK_EVENTS, MM_SYSCALLS, instances_of_mine, reap_dead_instances, unavailable_reason

__all__ = ["Capture", "CaptureError", "TraceUnavailable", "Trace", "TracedLock", "TracedTask", "CallRecord", "build_trace",
           "records_from_lines", "unavailable_reason", "instances_of_mine", "process_tids", "LOCK_EVENTS",
           "MM_SYSCALLS", "reap_dead_instances"]
