"""Record submodule outputs of a TorchScript model, which does not support forward hooks.

The compiled forward graph calls each submodule through ``prim::CallMethod[forward]`` on a
``prim::GetAttr`` chain from ``self``. :func:`tap` copies that graph, returns the values
of the chosen calls beside the model's output, and compiles the copy into a function that
runs on the loaded module. Only calls made by the top-level forward, outside loops and
branches, can be recorded this way; anything deeper is reported with the names that can.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def _calls(graph: torch._C.Graph) -> list[tuple[str, torch._C.Value]]:
    """(dotted submodule path, output value) of each submodule call, in execution order."""
    self_value = next(iter(graph.inputs()))
    paths = {self_value.unique(): ""}
    calls = []
    for node in graph.nodes():
        if node.kind() == "prim::GetAttr":
            base = paths.get(node.input().unique())
            if base is not None:
                paths[node.output().unique()] = f"{base}.{node.s('name')}".lstrip(".")
        elif node.kind() == "prim::CallMethod" and node.s("name") == "forward":
            path = paths.get(next(iter(node.inputs())).unique())
            if path and node.outputsSize() == 1:
                calls.append((path, node.output()))
    return calls


def callable_names(module: torch.jit.ScriptModule) -> list[str]:
    """Submodules whose outputs :func:`tap` can record, in call order, each once."""
    return list(dict.fromkeys(path for path, _ in _calls(module.forward.graph)))


def tap(
    module: torch.jit.ScriptModule, names: Sequence[str]
) -> tuple[Callable[[torch.Tensor], list[torch.Tensor]], list[tuple[str, int]]]:
    """A function ``x -> [outputs of the recorded calls]`` and, per output, (name, call number).

    Every call of each named submodule is recorded, numbered from 1 in execution order.
    """
    graph = module.forward.graph.copy()
    calls = [(path, value) for path, value in _calls(graph) if path in set(names)]
    missing = [n for n in names if n not in {p for p, _ in calls}]
    if missing:
        raise ValueError(
            f"cannot record {', '.join(map(repr, missing))} in this TorchScript model: "
            "TorchScript has no forward hooks, so repsim records only submodules called "
            "directly by the top-level forward; those are: "
            f"{', '.join(callable_names(module)) or '(none)'}. For deeper layers, load the "
            "weights as a state_dict with model='package.module:callable'"
        )
    outputs = [value for _, value in calls]
    while len(list(graph.outputs())):
        graph.eraseOutput(0)
    tup = graph.create("prim::TupleConstruct", outputs)
    graph.appendNode(tup)
    tup.output().setType(torch._C.TupleType([v.type() for v in outputs]))
    graph.registerOutput(tup.output())
    torch._C._jit_pass_dce(graph)  # the model's own output is no longer needed
    fn = torch._C._create_function_from_graph("repsim_tap", graph)
    counts: dict[str, int] = {}
    keys = []
    for path, _ in calls:
        counts[path] = counts.get(path, 0) + 1
        keys.append((path, counts[path]))
    return (lambda x: list(fn(module._c, x))), keys
