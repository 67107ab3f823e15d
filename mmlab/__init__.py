"""mmlab: a real multithreaded testbed for Linux mm locking.

The public surface: :class:`MM` (the model of an mm_struct), :class:`File`, the flag constants
with Linux x86-64 numbers, the kernel profiles, the cost model and clocks, and the errors.

    >>> from mmlab import MM, MAP_PRIVATE, MAP_ANONYMOUS, MAP_POPULATE, PROT_READ, PROT_WRITE
    >>> mm = MM("v3.9")
    >>> addr = mm.mmap(0, 1 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE)
"""

from mmlab.flags import *  # noqa: F401,F403
from mmlab.flags import PAGE_SIZE, TASK_SIZE
from mmlab.errors import SIGBUS, SIGSEGV, Signal
from mmlab.clock import DEFAULT_COSTS, ZERO_COSTS, Costs, Clock, RealClock, VirtualClock
from mmlab.kernels import KERNELS, Kernel, get_kernel, parse_kernels
from mmlab.current import current, set_task_name
from mmlab.mm.filemap import File
from mmlab.mm.mm_struct import MM, CallInfo, VmaInfo

__version__ = "0.1.0"

from mmlab import flags as _flags

__all__ = [n for n in dir(_flags) if n.isupper() and not n.startswith("_")] + [
    "MM", "File", "CallInfo", "VmaInfo", "Kernel", "KERNELS", "get_kernel", "parse_kernels",
    "Costs", "DEFAULT_COSTS", "ZERO_COSTS", "Clock", "RealClock", "VirtualClock",
    "SIGSEGV", "SIGBUS", "Signal", "PAGE_SIZE", "TASK_SIZE", "current", "set_task_name", "__version__",
]
