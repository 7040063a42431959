"""Where each task of a flow goes in a picture: layers from left to right, groups for big flows.

A flow is drawn left to right: a task's layer is the length of the longest chain of
dependencies that leads to it (longest-path layering), so every arrow points right and a task
stands one step after its latest dependency. Inside a layer, nodes are ordered by the mean
position of their dependencies (a few barycenter sweeps), which keeps the arrows of a fan-out
and its fan-in parallel instead of crossed.

A flow of thousands of tasks cannot be read task by task, and it is usually made of a few
shapes repeated: the 9,998 chunks of a fan-out all wait for `prepare` and are all awaited by
`aggregate`. Above `group_above` tasks, tasks that wait for the same ids and are awaited by the
same ids become one node that says how many they are; their arrows are the same, so nothing is
lost but repetition. Layout is pure: it reads ids and `after` lists and returns numbers, so the
SVG writer (`flows.drawing`), `taskfleet flow show` and `taskfleet report` share it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

#: Above this many tasks, tasks with the same dependencies and dependents are drawn as one node.
DEFAULT_GROUP_ABOVE = 200
#: Barycenter sweeps that order the nodes inside each layer (each is one pass over the edges).
ORDER_SWEEPS = 4
#: Characters that separate the parts of an id, where a group's label may end.
SEPARATORS = "-_.:/ "


@dataclass
class FlowNode:
    """One box of the picture: one task, or a group of tasks that wait for the same ids and
    are awaited by the same ids."""

    members: list[str]
    layer: int = 0
    #: position inside the layer, 0 at the top
    row: int = 0

    @property
    def is_group(self) -> bool:
        return len(self.members) > 1

    @property
    def label(self) -> str:
        """The task id; for a group, the ids' common start and how many they are."""
        if not self.is_group:
            return self.members[0]
        prefix = _common_start(self.members)
        # Cut back to a separator, so `chunk-00001`..`chunk-09998` reads `chunk`, not `chunk-0`.
        cut = max(prefix.rfind(ch) for ch in SEPARATORS)
        prefix = prefix[:cut].rstrip(SEPARATORS) if cut > 0 else prefix
        return f"{prefix or 'tasks'} ({len(self.members):,} tasks)"


def _common_start(texts: Sequence[str]) -> str:
    """The longest text every one of `texts` starts with (character by character: ids are
    not paths)."""
    shortest, longest = min(texts), max(texts)
    for i, ch in enumerate(shortest):
        if ch != longest[i]:
            return shortest[:i]
    return shortest


@dataclass
class FlowLayout:
    """Nodes with their layer and row, and arrows as (from node, to node) indices: a
    dependency points to the task that waits for it."""

    nodes: list[FlowNode]
    edges: list[tuple[int, int]]
    grouped: bool
    tasks: int
    #: task id -> index of its node
    node_of: dict[str, int] = field(default_factory=dict)

    @property
    def layers(self) -> list[list[int]]:
        """Node indices per layer, each in row order."""
        count = 1 + max((node.layer for node in self.nodes), default=-1)
        columns: list[list[int]] = [[] for _ in range(count)]
        for index, node in enumerate(self.nodes):
            columns[node.layer].append(index)
        for column in columns:
            column.sort(key=lambda i: self.nodes[i].row)
        return columns

    def topological_members(self) -> Iterable[str]:
        """Every task id, each after all of its dependencies (layer by layer)."""
        for column in self.layers:
            for index in column:
                yield from self.nodes[index].members


def layout_flow(
    ids: Sequence[str],
    after: Mapping[str, Sequence[str]],
    *,
    group_above: int = DEFAULT_GROUP_ABOVE,
) -> FlowLayout:
    """Lay out the tasks `ids` (in file order) whose dependencies are `after` (task id -> the
    ids it waits for; ids not in `ids` are ignored: `DependencyGraph.check` refuses them
    before anything is drawn). The graph must have no cycle (the check refuses those too)."""
    known = set(ids)
    dependents: dict[str, list[str]] = {}
    for task_id, waits_for in after.items():
        if task_id not in known:
            continue
        for other in waits_for:
            if other in known:
                dependents.setdefault(other, []).append(task_id)
    grouped = len(ids) > group_above
    nodes, node_of = _make_nodes(ids, after, dependents, known, grouped)
    edge_set: set[tuple[int, int]] = set()
    for task_id, waits_for in after.items():
        target = node_of.get(task_id)
        if target is None:
            continue
        for other in waits_for:
            source = node_of.get(other)
            if source is not None:
                edge_set.add((source, target))
    edges = sorted(edge_set)
    _assign_layers(nodes, edges)
    _order_rows(nodes, edges)
    return FlowLayout(nodes, edges, grouped and len(nodes) < len(ids), len(ids), node_of)


def _make_nodes(
    ids: Sequence[str],
    after: Mapping[str, Sequence[str]],
    dependents: Mapping[str, list[str]],
    known: set[str],
    grouped: bool,
) -> tuple[list[FlowNode], dict[str, int]]:
    """One node per task, or (grouped) one per distinct (dependencies, dependents) pair, in
    the order of each node's first task in the file."""
    nodes: list[FlowNode] = []
    node_of: dict[str, int] = {}
    by_signature: dict[tuple[frozenset[str], frozenset[str]], int] = {}
    for task_id in ids:
        if task_id in node_of:
            continue
        if grouped:
            signature = (
                frozenset(other for other in after.get(task_id, ()) if other in known),
                frozenset(dependents.get(task_id, ())),
            )
            index = by_signature.get(signature)
            if index is not None:
                nodes[index].members.append(task_id)
                node_of[task_id] = index
                continue
            by_signature[signature] = len(nodes)
        node_of[task_id] = len(nodes)
        nodes.append(FlowNode([task_id]))
    return nodes, node_of


def _assign_layers(nodes: list[FlowNode], edges: list[tuple[int, int]]) -> None:
    """Longest-path layers, in topological order (Kahn's algorithm, iterative)."""
    successors: list[list[int]] = [[] for _ in nodes]
    indegree = [0] * len(nodes)
    for source, target in edges:
        successors[source].append(target)
        indegree[target] += 1
    ready = [i for i, d in enumerate(indegree) if d == 0]
    while ready:
        index = ready.pop()
        layer = nodes[index].layer + 1
        for target in successors[index]:
            if nodes[target].layer < layer:
                nodes[target].layer = layer
            indegree[target] -= 1
            if indegree[target] == 0:
                ready.append(target)


def _order_rows(nodes: list[FlowNode], edges: list[tuple[int, int]]) -> None:
    """Rows inside each layer: file order first, then barycenter sweeps, left to right by
    the rows of dependencies and right to left by the rows of dependents."""
    predecessors: list[list[int]] = [[] for _ in nodes]
    successors: list[list[int]] = [[] for _ in nodes]
    for source, target in edges:
        predecessors[target].append(source)
        successors[source].append(target)
    columns: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        columns.setdefault(node.layer, []).append(index)
    _number(nodes, columns.values())
    order = sorted(columns)

    def centred(index: int) -> float:
        # Columns are drawn centred on one line, so a row is compared by its offset from the
        # middle of its column, not by its index.
        node = nodes[index]
        return node.row - (len(columns[node.layer]) - 1) / 2

    for sweep in range(ORDER_SWEEPS):
        forward = sweep % 2 == 0
        neighbours = predecessors if forward else successors
        for layer in order if forward else reversed(order):
            column = columns[layer]

            def barycenter(index: int, neighbours: list[list[int]] = neighbours) -> float:
                linked = neighbours[index]
                if not linked:
                    return centred(index)
                return sum(centred(other) for other in linked) / len(linked)

            column.sort(key=lambda i: (barycenter(i), nodes[i].row))
            _number(nodes, [column])


def _number(nodes: list[FlowNode], columns: Iterable[list[int]]) -> None:
    for column in columns:
        for row, index in enumerate(column):
            nodes[index].row = row
