"""Rewrite the NanoDet-m ONNX file so that its batch dimension is symbolic.

Usage::

    python models/nanodet-m-coco/make_dynbatch.py SRC.onnx DST.onnx

The tf2onnx export fixes the batch to 1 in two places, and both must change:

1. the graph input ``input_1:0`` and the six outputs declare a first dimension of 1 (or an unnamed
   one); they are renamed to the symbolic dimension ``batch`` (cells and channels get their real
   sizes so that the interface is self-describing);
2. the head reshapes each level with the constant target shape ``[1, C, -1]`` (initialisers
   ``unknown_63:0`` for the 80 class channels and ``unknown_64:0`` for the 44 box channels).
   Editing only the declared shapes leaves those at 1, and a batch of 4 then *silently* folds the
   images into the cell axis (outputs of shape ``[1, 4*cells, C]`` with mixed-up values).  The
   first entry is set to 0, which ONNX Reshape reads as "copy this dimension from the input".

The fp16 export also carries ``value_info`` shape hints with the batch fixed at 1 and lists its
input/output Cast nodes after their consumers; the hints are dropped (onnxruntime infers them
again) and the nodes are put back into topological order so that ``onnx.checker`` accepts the file.
"""

from __future__ import annotations

import sys
from pathlib import Path

import onnx
from onnx import numpy_helper

BATCH = "batch"
RESHAPE_TARGETS = ("unknown_63:0", "unknown_64:0")
# cells per stride 8, 16, 32 for a 416x416 input
OUTPUT_SHAPES = {
    "Identity:0": (2704, 80),
    "Identity_1:0": (676, 80),
    "Identity_2:0": (169, 80),
    "Identity_3:0": (2704, 44),
    "Identity_4:0": (676, 44),
    "Identity_5:0": (169, 44),
}


def _set_shape(value: onnx.ValueInfoProto, dims: tuple[str | int, ...]) -> None:
    shape = value.type.tensor_type.shape
    del shape.dim[:]
    for dim in dims:
        new = shape.dim.add()
        if isinstance(dim, str):
            new.dim_param = dim
        else:
            new.dim_value = dim


def _topological_order(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    available = {v.name for v in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        blocked = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                blocked.append(node)
        if len(blocked) == len(pending):
            raise SystemExit(f"graph has a cycle or a dangling input near {blocked[0].name!r}")
        pending = blocked
    return ordered


def make_dynamic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    graph = model.graph
    _set_shape(graph.input[0], (BATCH, 3, 416, 416))
    for output in graph.output:
        _set_shape(output, (BATCH, *OUTPUT_SHAPES[output.name]))

    patched = 0
    for index, init in enumerate(graph.initializer):
        if init.name in RESHAPE_TARGETS:
            target = numpy_helper.to_array(init).copy()
            if target[0] != 1 or target[-1] != -1:
                raise SystemExit(f"unexpected reshape target {target.tolist()} in {init.name}")
            target[0] = 0
            graph.initializer[index].CopyFrom(numpy_helper.from_array(target, init.name))
            patched += 1
    if patched != len(RESHAPE_TARGETS):
        raise SystemExit(f"expected {len(RESHAPE_TARGETS)} reshape targets, patched {patched}")

    for info in graph.value_info:
        info.type.tensor_type.ClearField("shape")
    ordered = _topological_order(graph)
    del graph.node[:]
    graph.node.extend(ordered)
    onnx.checker.check_model(model, full_check=True)
    return model


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    model = make_dynamic_batch(onnx.load(argv[1]))
    onnx.save(model, argv[2])
    print(f"wrote {argv[2]} ({Path(argv[2]).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
