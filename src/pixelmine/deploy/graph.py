"""A small builder for hand-written ONNX graphs: nodes, constants and unique names, nothing more.

Why by hand: the parts of an exported classifier that are not a network (the resize and crop of
imaging/decode.py, the head's standardisation, Gemm and calibration) are a few dozen plain ONNX ops whose
every number is known; writing them directly keeps each one exact and readable, where tracing Python code
through an exporter would bake in the example image's size.
"""

from __future__ import annotations

import numpy as np

OPSET = 18


class GraphBuilder:
    """Collects nodes and initialisers; every call returns the name of the tensor it produced."""

    def __init__(self, prefix: str = ""):
        from onnx import helper, numpy_helper

        self._helper = helper
        self._numpy_helper = numpy_helper
        self.prefix = prefix
        self.nodes: list = []
        self.initializers: list = []
        self.opsets: dict[str, int] = {"": OPSET}  # domain -> version, raised by the graphs copied in
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{self.prefix}{hint}_{self._count}"

    def const(self, value, dtype=None, hint: str = "const") -> str:
        array = np.asarray(value, dtype=dtype) if dtype is not None else np.asarray(value)
        name = self.fresh(hint)
        self.initializers.append(self._numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, *inputs: str, hint: str | None = None, outputs: int = 1, **attributes):
        names = [self.fresh(hint or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self._helper.make_node(op_type, list(inputs), names, **attributes))
        return names[0] if outputs == 1 else names

    def rename(self, tensor: str, name: str) -> str:
        """Give ``tensor`` a fixed public name (a graph output)."""
        self.nodes.append(self._helper.make_node("Identity", [tensor], [name]))
        return name
