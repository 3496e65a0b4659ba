"""What the scoring stream waits for, and the end of a wait that cannot end by itself.

Ray Data waits without a word for an actor or a task that fits on no node: a
plan that stopped fitting when a node left, or CPUs another job holds. A thread
of the driver looks at the cluster every few seconds: what Ray cannot place and
where it would need room, which nodes of the plan are gone. When the plan no
longer fits the nodes that are left, or no rows come back for
`ray.stall_timeout_s` while Ray waits for room, it ends the stream by raising
`StreamHalted` in the thread that consumes it, and says why in `verdict`.

The consumer waits on a lock inside Ray Data's iterator, where only a signal
reaches it: the watch sends one to the main thread, whose handler raises.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pipeline.scoring.clock import StreamClock
from pipeline.scoring.placement import ActorPlan, Node, alive_nodes

log = logging.getLogger(__name__)
CHECK_SECONDS = 5.0
HALT_SIGNAL = signal.SIGUSR1


class StreamHalted(BaseException):
    """Raised in the consuming thread to end a stream that cannot go on; the watch's
    `verdict` says why. A BaseException, as KeyboardInterrupt is, so that no handler of
    ordinary errors on its way (a shard's write, a commit) takes it for its own."""


@dataclass(frozen=True, kw_only=True)
class Verdict:
    replan: bool  # True: nodes left and a new plan on the others may go on
    reason: str


@dataclass(frozen=True, kw_only=True)
class ClusterState:
    nodes: list[Node]
    free: dict[str, dict[str, float]]  # node id: resources not reserved
    demands: list[tuple[dict[str, float], int]]  # shapes Ray has not placed, and how many
    launching: int  # nodes an autoscaler is starting


def cluster_state() -> ClusterState:
    """The cluster as the GCS sees it now: live nodes, free resources, unplaced demands."""
    import ray
    from ray.autoscaler.v2.sdk import get_cluster_status

    status = get_cluster_status(ray.get_runtime_context().gcs_address)
    free = {}
    for info in status.active_nodes + status.idle_nodes:
        if info.node_id and info.resource_usage:
            free[info.node_id] = {
                u.resource_name: u.total - u.used for u in info.resource_usage.usage
            }
    demands = [
        (dict(request.bundle), request.count)
        for demand in status.resource_demands.ray_task_actor_demand
        for request in demand.bundles_by_count
    ]
    launching = len(status.pending_launches) + len(status.pending_nodes)
    return ClusterState(nodes=alive_nodes(), free=free, demands=demands, launching=launching)


def _fits(bundle: dict[str, float], free: dict[str, float]) -> bool:
    return all(free.get(name, 0.0) + 1e-9 >= amount for name, amount in bundle.items())


def _shape(bundle: dict[str, float]) -> str:
    return ", ".join(f"{name} {amount:g}" for name, amount in sorted(bundle.items()))


def unplaceable(state: ClusterState) -> str | None:
    """What Ray waits to place that no live node has room for now, and what each has
    free; None when everything asked for has a place (or is placed)."""
    stuck = [
        (bundle, count)
        for bundle, count in state.demands
        if not any(_fits(bundle, state.free.get(n.node_id, {})) for n in state.nodes)
    ]
    if not stuck:
        return None
    wanted = "; ".join(f"{count} needing {{{_shape(bundle)}}}" for bundle, count in stuck)
    names = {name for bundle, _ in stuck for name in bundle}
    room = "; ".join(
        f"{node.describe()}: "
        + ", ".join(f"{n} {state.free.get(node.node_id, {}).get(n, 0.0):g}" for n in sorted(names))
        + " free"
        for node in state.nodes
    )
    return f"Ray cannot place {wanted} (actors or tasks) on any live node ({room})"


@dataclass(kw_only=True)
class PlacementWatch:
    plan: ActorPlan
    clock: StreamClock
    stall_seconds: float
    state: Callable[[], ClusterState] = cluster_state
    now: Callable[[], float] = time.monotonic
    interval: float = CHECK_SECONDS
    # What Ray waits for, as last seen (None: nothing it cannot place).
    waiting: str | None = None
    lost: list[Node] = field(default_factory=list)
    verdict: Verdict | None = None
    _arrivals: int = 0
    _progress: float = field(init=False)
    _stuck_since: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _consumer: int | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._progress = self.now()

    def check(self) -> Verdict | None:
        """Look at the cluster once; a verdict when the stream cannot go on."""
        state, at = self.state(), self.now()
        alive = {node.node_id for node in state.nodes}
        for share in self.plan.nodes:
            if share.node.node_id not in alive and share.node not in self.lost:
                self.lost.append(share.node)
                log.warning("%s left the cluster mid-run", share.node.describe())
        if self.lost and not self.plan.fits(state.nodes):
            gone = ", ".join(node.describe() for node in self.lost)
            return Verdict(replan=True, reason=f"{gone} left, and the plan no longer fits")
        if self.clock.arrivals != self._arrivals:
            self._arrivals, self._progress = self.clock.arrivals, at
        self.waiting = unplaceable(state)
        if self.waiting is None or state.launching:
            self._stuck_since = None
            return None
        if self._stuck_since is None:
            self._stuck_since = at
        if at - max(self._progress, self._stuck_since) < self.stall_seconds:
            return None
        return Verdict(
            replan=False,
            reason=f"no rows came back for {self.stall_seconds:g} s while {self.waiting}",
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                verdict = self.check()
            except Exception as error:  # a look at the cluster that failed is not a verdict
                log.debug("could not check the cluster: %s", error)
                continue
            if verdict is not None:
                log.error("scoring cannot go on: %s", verdict.reason)
                self._halt(verdict)
                return

    def _halt(self, verdict: Verdict) -> None:
        with self._lock:
            self.verdict = verdict
            if self._consumer is not None:
                signal.pthread_kill(self._consumer, HALT_SIGNAL)

    def _on_signal(self, signum: int, frame: object) -> None:
        with self._lock:
            if self._consumer is not None and self.verdict is not None:
                raise StreamHalted

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Watch while the block consumes the stream; StreamHalted ends the block early.
        Off the main thread, where no signal handler runs, the watch only reports."""
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(HALT_SIGNAL, self._on_signal) if main else None
        self._consumer = threading.get_ident() if main else None
        thread = threading.Thread(target=self._run, name="winnow-watch", daemon=True)
        thread.start()
        try:
            yield
        finally:
            self._stop.set()
            with self._lock:
                self._consumer = None  # a signal still on its way is ignored from here
            thread.join()
            if main:
                signal.signal(HALT_SIGNAL, previous)
