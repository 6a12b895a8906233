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


def alternate_cuda(
    runs: dict[str, Callable[[], Any]], repeats: int
) -> tuple[dict[str, float], dict[str, list[float]], dict[str, float], list[str]]:
    r"""
    Time each of ``runs`` alternately (A, B, C, A, B, C, ...) ``repeats`` times, so that drift
    hits all alike (the caller warms them up first). A run out of GPU memory is recorded and not
    tried again.

    Returns:
        *tuple* ``(median seconds, all seconds, largest peak GiB, runs out of memory)``, the first
        three by run name (the runs that fit).
    """
    import torch

    times: dict[str, list[float]] = {name: [] for name in runs}
    peaks: dict[str, float] = {name: 0.0 for name in runs}
    failed: list[str] = []
    for _ in range(repeats):
        for name, run in runs.items():
            if name in failed:
                continue
            try:
                seconds, peak = timed_cuda(run)
            except torch.OutOfMemoryError:
                failed.append(name)
                torch.cuda.empty_cache()
                continue
            times[name].append(seconds)
            peaks[name] = max(peaks[name], peak)
    medians = {name: sorted(values)[len(values) // 2] for name, values in times.items() if values}
    return medians, {n: times[n] for n in medians}, {n: peaks[n] for n in medians}, failed
