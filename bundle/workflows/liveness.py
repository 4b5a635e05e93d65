"""Rank liveness under torchrun: heartbeats, and waits on the other ranks that give up naming the missing ones.

Every rank of a sharded run beats (adds 1 to ``heartbeat/<rank>`` in the job's key-value store, a public
:class:`torch.distributed.Store`) from a small thread. A rank that waits for the others (:func:`wait_for_ranks`:
the barriers and gathers of ``bundle.workflows.distributed``) polls the store and gives up

* as soon as a missing rank's counter has not moved for :func:`lost_after` seconds (it was killed, its machine is
  gone, or the whole process is frozen), or
* after ``timeout`` seconds in any case (a rank that still beats but never arrives: a hung main thread),

raising :class:`~bundle.errors.RankLostError` with the ranks that did not arrive. Only the waiter's own clock
is used (counters, not timestamps), so the nodes' clocks need not agree.

The heartbeat thread calls into C++ (the store client): it is stopped and joined before the interpreter shuts
down (:meth:`Heartbeat.stop`, also registered with :mod:`atexit`), since a thread still inside a C++ call at
shutdown aborts the process ("terminate called without an active exception").
"""

from __future__ import annotations

import atexit
import pickle
import threading
import time
from collections.abc import Callable

from bundle.errors import RankLostError

__all__ = ["Heartbeat", "beat_interval", "lost_after", "wait_for_ranks", "store_gather"]


def beat_interval(timeout: float) -> float:
    """Seconds between heartbeats for a wait ``timeout``: a hundredth of it, between 0.1 s and 2 s."""
    return min(2.0, max(0.1, timeout / 100))


def lost_after(timeout: float) -> float:
    """Seconds a missing rank's heartbeat may stand still before it is given up: 10 beats (1 to 20 s)."""
    return 10 * beat_interval(timeout)


class Heartbeat:
    """A daemon thread adding 1 to ``heartbeat/<rank>`` in ``store`` every ``interval`` seconds until stopped."""

    def __init__(self, store, rank: int, interval: float):
        self.store, self.rank, self.interval = store, rank, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-rank{rank}", daemon=True)

    def start(self) -> Heartbeat:
        self.store.add(f"heartbeat/{self.rank}", 1)
        self._thread.start()
        atexit.register(self.stop)
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.add(f"heartbeat/{self.rank}", 1)
            except Exception:  # the store is gone (the job is ending): the waits report it, not this thread
                return

    def stop(self) -> None:
        """Stop beating and join the thread (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
        atexit.unregister(self.stop)


def _beats(store, rank: int) -> int:
    return int(store.add(f"heartbeat/{rank}", 0))


def wait_for_ranks(
    store,
    key: str,
    rank: int,
    world: int,
    timeout: float,
    stall_s: float | None = None,
    what: str | None = None,
    while_waiting: Callable[[], object] | None = None,
) -> None:
    """Mark ``rank`` arrived at ``key`` and wait until all ``world`` ranks have; raise naming those that did not.

    ``stall_s`` (default: :func:`lost_after` of ``timeout``) is how long a missing rank's heartbeat may
    stand still; ``what`` names the wait point in the message; ``while_waiting()`` is called between polls
    (e.g. to redraw a progress bar). Raises :class:`~bundle.errors.RankLostError`.
    """
    stall = lost_after(timeout) if stall_s is None else stall_s
    store.set(f"{key}/arrived/{rank}", b"1")
    start = time.monotonic()
    seen = {r: (_beats(store, r), start) for r in range(world) if r != rank}
    poll = 0.01
    while True:
        missing = [r for r in range(world) if r != rank and not store.check([f"{key}/arrived/{r}"])]
        if not missing:
            return
        now = time.monotonic()
        for r in missing:
            beats = _beats(store, r)
            if beats != seen[r][0]:
                seen[r] = (beats, now)
        lost = [r for r in missing if now - seen[r][1] >= stall]
        where = f" at {what!r}" if what else ""
        if lost:
            ago = ", ".join(f"rank {r} {now - seen[r][1]:.1f} s ago" for r in lost)
            raise RankLostError(
                f"rank {_names(lost)} of {world} stopped sending heartbeats ({ago}; killed or hung) while rank "
                f"{rank} waited for it{where}; giving up (dist_timeout_s={timeout:g})",
                ranks=lost,
            )
        if now - start >= timeout:
            raise RankLostError(
                f"rank {_names(missing)} of {world} did not arrive{where} within dist_timeout_s={timeout:g} s but "
                f"still sends heartbeats (hung or too slow); rank {rank} gives up",
                ranks=missing,
            )
        if while_waiting is not None:
            while_waiting()
        time.sleep(poll)
        poll = min(poll * 2, 0.5)


def _names(ranks: list[int]) -> str:
    return ", ".join(str(r) for r in ranks)


def store_gather(store, key: str, obj, rank: int, world: int, timeout: float, what: str | None = None) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank, through ``store`` (pickled values).

    Waits as :func:`wait_for_ranks` (naming ranks that never send theirs). No tensors and no backend threads
    are involved, so nothing of the exchange is left in flight when the process exits.
    """
    store.set(f"{key}/value/{rank}", pickle.dumps(obj))
    wait_for_ranks(store, key, rank, world, timeout, what=what)
    return [obj if r == rank else pickle.loads(store.get(f"{key}/value/{r}")) for r in range(world)]
