"""Where the scoring stage's model actors and read tasks go: a plan made node by node.

Ray places each actor and each task on one node. A plan made from the cluster's
totals can reserve CPUs that exist only as fractions spread over several nodes:
the read task that feeds the actors then fits on no node, and the stream waits
for it forever. Ray Data gives every actor of a pool one shape (its CPUs and
GPUs), so the plan chooses that shape from each node's own resources, and checks
that however Ray places the actors, some node keeps room for a read task.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pipeline.config import RayConfig
from pipeline.scoring.prepare import GPU_PIL_THREADS

READ_CPUS = 0.5
# A reader process reads and tokenizes about 3,000 web-like pairs/s on one core (reading
# dominates): eight feed one GPU's towers (ViT-B-32's: 14,000 pairs/s on an H200). More
# only slow the actor's start, each importing its libraries beside it.
READERS_PER_GPU = 8
# Ray counts resources in units of 1/10,000; the plan does its sums in the same units so
# that what it checks is exactly what Ray will compare.
UNIT = 10_000
READ_UNITS = int(READ_CPUS * UNIT)


class ScoringFailed(RuntimeError):
    """The scoring stage cannot go on; the shards committed before it are kept."""


class PlacementError(ScoringFailed):
    """No plan fits the cluster's nodes: the message names what is missing and where."""


@dataclass(frozen=True, kw_only=True)
class Node:
    node_id: str
    address: str
    head: bool
    cpus: float
    gpus: float

    @property
    def cpu_units(self) -> int:
        return round(self.cpus * UNIT)

    def describe(self) -> str:
        role = ", head" if self.head else ""
        gpus = f", {self.gpus:g} GPU" if self.gpus else ""
        return f"node {self.node_id[:8]} ({self.address}{role}: {self.cpus:g} CPU{gpus})"


def single_node(cpus: float, gpus: float = 0.0) -> list[Node]:
    """A one-machine cluster: a local Ray, or the benchmark's model-only layout."""
    return [Node(node_id="local", address="127.0.0.1", head=True, cpus=cpus, gpus=gpus)]


def alive_nodes() -> list[Node]:
    """The cluster's live nodes as Ray reports them (the caller is connected)."""
    import ray

    return [
        Node(
            node_id=entry["NodeID"],
            address=entry.get("NodeManagerAddress", "?"),
            head="node:__internal_head__" in entry["Resources"],
            cpus=float(entry["Resources"].get("CPU", 0.0)),
            gpus=float(entry["Resources"].get("GPU", 0.0)),
        )
        for entry in ray.nodes()
        if entry.get("Alive")
    ]


@dataclass(frozen=True, kw_only=True)
class NodeShare:
    """What the plan expects on one node; Ray chooses the actual places."""

    node: Node
    actors: int
    read_tasks: int


@dataclass(frozen=True, kw_only=True)
class ActorPlan:
    device: str
    actors: int
    gpus_per_actor: float
    # The CPUs Ray reserves for each actor: as many as its threads use where the nodes
    # allow, never so many that no read task fits beside the actors.
    cpus_per_actor: float
    threads: int | None
    # Blocks Ray hands each actor at once, no more: a block queued in one actor would wait
    # there while another idles. On a CPU one: decoding and towers share the cores.
    calls_per_actor: int
    # Concurrent read + tokenize tasks, each its own process (see READERS_PER_GPU).
    read_tasks: int
    # Threads each actor decodes with PIL on, unless `images.decode_threads` says.
    decode_threads: int
    nodes: tuple[NodeShare, ...] = ()

    def describe(self) -> str:
        if self.device == "cuda":
            per_gpu = round(1 / self.gpus_per_actor)
            return f"{self.actors} GPU actor(s)" + (f", {per_gpu} per GPU" if per_gpu > 1 else "")
        return f"{self.actors} CPU actor(s) x {self.threads} thread(s)"

    def by_node(self) -> list[str]:
        """One line per node: what the plan puts there, the nodes it leaves out included."""
        shape = f"{self.cpus_per_actor:g} CPU" + (
            f" + {self.gpus_per_actor:g} GPU" if self.gpus_per_actor else ""
        )
        lines = []
        for share in self.nodes:
            if share.actors or share.read_tasks:
                parts = [f"{share.actors} actor(s) of {shape}"] if share.actors else []
                parts += [f"{share.read_tasks} read task(s)"] if share.read_tasks else []
                lines.append(f"{share.node.describe()}: {' + '.join(parts)}")
            else:
                lines.append(f"{share.node.describe()}: left out (no room for an actor)")
        return lines

    def fits(self, nodes: list[Node]) -> bool:
        """Whether every actor still has a place on `nodes`, with room for a read task."""
        each = int(self.cpus_per_actor * UNIT)
        slots = _gpu_slots(nodes, self.gpus_per_actor) if self.device == "cuda" else None
        return _always_room(nodes, self.actors, each, slots)


def device_of(nodes: list[Node]) -> str:
    """Where the model actors run: on GPUs wherever a node has a whole one."""
    return "cuda" if any(int(node.gpus) for node in nodes) else "cpu"


def plan_actors(settings: RayConfig, nodes: list[Node]) -> ActorPlan:
    if not nodes:
        raise PlacementError("cannot place the model actors: the cluster has no live node")
    if device_of(nodes) == "cuda":
        return _gpu_plan(settings, nodes)
    return _cpu_plan(settings, nodes)


def _gpu_slots(nodes: list[Node], gpus_per_actor: float) -> list[int]:
    per_gpu = round(1 / gpus_per_actor)
    return [int(node.gpus) * per_gpu for node in nodes]


def _gpu_plan(settings: RayConfig, nodes: list[Node]) -> ActorPlan:
    gpus = sum(int(node.gpus) for node in nodes)
    # More actors than GPUs share them, an equal slice each: two processes can keep one
    # GPU fed where one process's decode and launches cannot.
    actors = settings.num_actors or gpus
    gpus_per_actor = 1 / -(-actors // gpus)
    slots = _gpu_slots(nodes, gpus_per_actor)
    each = _largest_safe(nodes, actors, ceiling=UNIT, slots=slots, lowest=0)
    placed = _spread(
        actors,
        [min(s, n.cpu_units // each) if each else s for s, n in zip(slots, nodes, strict=True)],
    )
    readers = _readers(nodes, placed, each, cap=READERS_PER_GPU * gpus)
    threads = [
        int((node.cpus - r * READ_CPUS) / a)
        for node, a, r in zip(nodes, placed, readers, strict=True)
        if a
    ]
    return ActorPlan(
        device="cuda",
        actors=actors,
        gpus_per_actor=gpus_per_actor,
        cpus_per_actor=each / UNIT,
        threads=None,
        calls_per_actor=settings.batches_in_flight,
        read_tasks=sum(readers),
        decode_threads=max(GPU_PIL_THREADS, min(threads)),
        nodes=_shares(nodes, placed, readers),
    )


def _cpu_plan(settings: RayConfig, nodes: list[Node]) -> ActorPlan:
    cores = [int(node.cpus) for node in nodes]
    if not any(cores):
        raise PlacementError(
            "cannot place the model actors: no node has a whole CPU for one (CPU >= 1 "
            "missing); live nodes: " + "; ".join(node.describe() for node in nodes)
        )
    if settings.num_actors:
        actors = settings.num_actors
        threads = min(max(cores), max(1, sum(cores) // actors))
    else:
        threads = _cpu_threads(cores)
        actors = sum(_cpu_actors_on(c, threads) for c in cores)
    each = _largest_safe(nodes, actors, ceiling=threads * UNIT, slots=None, lowest=1)
    placed = _spread(actors, [n.cpu_units // each for n in nodes])
    # A CPU model is a thousand times slower than reading and tokenizing: one reader keeps
    # every actor fed and leaves the cores to the towers.
    readers = _readers(nodes, placed, each, cap=1)
    return ActorPlan(
        device="cpu",
        actors=actors,
        gpus_per_actor=0,
        cpus_per_actor=each / UNIT,
        threads=threads,
        calls_per_actor=1,
        read_tasks=1,
        decode_threads=threads,
        nodes=_shares(nodes, placed, readers),
    )


def _cpu_actors_on(cores: int, threads: int) -> int:
    """Actors of `threads` threads on a node of `cores`: up to four cores, one single-threaded
    actor per core (two such processes ran ViT-B-32's towers 10-25% faster than one process
    on two threads, whose threads wait on each other), then a quarter of the cores."""
    return min(cores // threads, max(4, cores // 4))


def _cpu_threads(cores: list[int]) -> int:
    """One thread count for every CPU actor (the pool has one shape): each node's own
    choice is a candidate, and the one that puts the most cores to work wins, the larger
    on a tie (fewer processes, each holding a model)."""
    candidates = {c // min(c, max(4, c // 4)) for c in cores if c}
    return max(candidates, key=lambda t: (sum(_cpu_actors_on(c, t) * t for c in cores), t))


def _largest_safe(
    nodes: list[Node], actors: int, *, ceiling: int, slots: list[int] | None, lowest: int
) -> int:
    """The largest CPU reservation per actor, at most `ceiling` units, with which every
    actor has a place and a read task always fits.

    Whether a reservation is safe changes only where it divides a node's CPUs, or its CPUs
    less a reader's, into whole actors: those values are the only candidates to try.
    """
    candidates = {ceiling, lowest}
    for node in nodes:
        for count in range(1, actors + 1):
            candidates.add(node.cpu_units // count)
            candidates.add(max(0, node.cpu_units - READ_UNITS) // count)
    for each in sorted((c for c in candidates if lowest <= c <= ceiling), reverse=True):
        if _always_room(nodes, actors, each, slots):
            return each
    if not any(node.cpu_units >= READ_UNITS for node in nodes):
        missing = f"CPU {READ_CPUS:g} for a read task"
    else:
        missing = f"room for {actors} model actor(s)"
    raise PlacementError(
        f"cannot place the model actors: no plan fits the nodes ({missing}); live nodes: "
        + "; ".join(node.describe() for node in nodes)
    )


def _always_room(nodes: list[Node], actors: int, each: int, slots: list[int] | None) -> bool:
    """Every actor of `each` CPU units has a place, and wherever Ray puts them some node
    keeps a read task's CPUs free. `slots`: how many actors each node's GPUs take (None:
    CPU actors, bounded by CPUs alone).

    Ray may put actors anywhere they fit. The only way to leave no node room for a read
    task is to fill each node until less than a reader's CPUs remain; if that takes more
    actors than there are, or some node can never be filled that far, a reader fits.
    """
    most, fill = [], []
    for index, node in enumerate(nodes):
        by_cpu = node.cpu_units // each if each else None  # None: CPUs bound nothing
        if slots is None:
            cap = by_cpu or 0
        else:
            cap = slots[index] if by_cpu is None else min(slots[index], by_cpu)
        most.append(cap)
        if node.cpu_units < READ_UNITS:
            fill.append(0)
        elif each == 0:
            fill.append(cap + 1)  # actors that reserve no CPU never take a reader's
        else:
            fill.append((node.cpu_units - READ_UNITS) // each + 1)
    if sum(most) < actors:
        return False
    if any(f > m for f, m in zip(fill, most, strict=True)):
        return True
    return sum(fill) > actors


def _spread(actors: int, most: list[int]) -> list[int]:
    """The actors over the nodes, one at a time to the node with the most room left (Ray
    Data asks Ray to spread them)."""
    placed = [0] * len(most)
    for _ in range(actors):
        room = [m - p for m, p in zip(most, placed, strict=True)]
        best = max(range(len(most)), key=lambda i: room[i])
        if room[best] <= 0:
            break
        placed[best] += 1
    return placed


def _readers(nodes: list[Node], placed: list[int], each: int, *, cap: int) -> list[int]:
    """Read tasks where the actors leave CPUs, at most `cap` of them, at least one."""
    free = [
        max(0, node.cpu_units - p * each) // READ_UNITS
        for node, p in zip(nodes, placed, strict=True)
    ]
    readers = [0] * len(nodes)
    for _ in range(max(1, min(cap, sum(free)))):
        best = max(range(len(nodes)), key=lambda i: free[i] - readers[i])
        readers[best] += 1
    return readers


def _shares(nodes: Iterable[Node], placed: list[int], readers: list[int]) -> tuple[NodeShare, ...]:
    return tuple(
        NodeShare(node=node, actors=a, read_tasks=r)
        for node, a, r in zip(nodes, placed, readers, strict=True)
    )
