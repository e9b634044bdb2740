"""A model that runs as long as it is told: an ONNX ``Loop`` of ``trips`` additions
(``TRIPS``: long enough to be a runaway), for the deadline tests."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TRIPS = 10**12


def loop_model(trips: int | None) -> onnx.ModelProto:
    """``y = x + trips`` by a ``Loop`` adding 1 per trip: ``trips`` fixed in the graph, or
    (None) taken from an INT64 input ``n`` of shape [1]."""
    body = helper.make_graph(
        [
            helper.make_node(
                "Constant", [], ["one"], value=numpy_helper.from_array(np.ones(1, np.float32))
            ),
            helper.make_node("Add", ["acc_in", "one"], ["acc_out"]),
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [1]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [1]),
        ],
    )
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])]
    nodes = [
        helper.make_node(
            "Constant", [], ["keep_going"], value=numpy_helper.from_array(np.array(True))
        )
    ]
    if trips is None:
        inputs.append(helper.make_tensor_value_info("n", TensorProto.INT64, [1]))
        nodes.append(helper.make_node("ReduceMax", ["n"], ["trips"], keepdims=0))
    else:
        value = numpy_helper.from_array(np.array(trips, np.int64))
        nodes.append(helper.make_node("Constant", [], ["trips"], value=value))
    nodes.append(helper.make_node("Loop", ["trips", "keep_going", "x"], ["y"], body=body))
    graph = helper.make_graph(
        nodes, "loop", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
