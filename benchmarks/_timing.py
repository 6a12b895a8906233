"""Timing one call on the GPU: wall time and the peak memory it adds, for the benchmark scripts."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def timed_cuda(run: Callable[[], Any]) -> tuple[float, float]:
    r"""
    Run ``run()`` once on a synchronised, emptied CUDA allocator.

    Returns:
        *tuple* ``(seconds, peak GiB above the memory allocated before the call)``.
    """
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    start = time.perf_counter()
    result = run()
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - before) / 2**30
    del result
    return seconds, peak
