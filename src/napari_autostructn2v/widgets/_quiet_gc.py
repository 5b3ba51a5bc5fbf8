"""Keep Python's full garbage collections short while a widget's run is going on.

With napari and torch loaded, a full collection walks about half a million objects: 150-200 ms
with the interpreter lock held, on whichever thread triggers it, so the viewer freezes for that long
(measured by `benchmarks.gui`; a burst of allocations such as torch's first optimiser, which imports
`torch._dynamo`, triggers one). While a run is going on, the objects that existed before it are
moved to Python's permanent generation (`gc.freeze`), so a full collection walks only what the run
created; they are given back (`gc.unfreeze`) when the last run ends, and collected as usual then.
"""

from __future__ import annotations

import gc

_runs = 0  # the runs holding the freeze
_ours = False  # whether the freeze was made here (someone else's is left alone)


def hold() -> None:
    """A run begins: freeze the objects that exist now, unless a run (or the host) already has."""
    global _runs, _ours
    if _runs == 0:
        _ours = gc.get_freeze_count() == 0
        if _ours:
            gc.freeze()
    _runs += 1


def release() -> None:
    """A run ended: when it was the last, give the frozen objects back to the collector."""
    global _runs
    _runs -= 1
    if _runs == 0 and _ours:
        gc.unfreeze()


def quiet_gc_while(worker, context) -> None:
    """Hold the freeze from now until `worker` finishes, or until QObject `context` (the widget that was
    to start it) is deleted first; released once either way."""
    held = [True]
    hold()

    def end(*_) -> None:
        if held:
            held.clear()
            release()

    worker.finished.connect(end)
    context.destroyed.connect(end)
