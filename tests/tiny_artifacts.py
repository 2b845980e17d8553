"""Tiny real artifacts (ONNX, ExecuTorch) with the exporters' I/O names, for harness and evaluation tests."""

import torch


def tiny_onnx(path, tower="image"):
    """A real ONNX file with the exporters' I/O names: pixels (1x3x8x8) -> image_embedding (1x3)."""
    import onnx
    from onnx import TensorProto, helper

    if tower == "image":
        inp = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, 8, 8])
        node = helper.make_node("ReduceMean", ["pixels"], ["r"], axes=[2, 3], keepdims=0)
    else:
        inp = helper.make_tensor_value_info("tokens", TensorProto.INT32, [1, 77])
        cast = helper.make_node("Cast", ["tokens"], ["f"], to=TensorProto.FLOAT)
        node = helper.make_node("ReduceMean", ["f"], ["r"], axes=[1], keepdims=1)
    out_name = f"{tower}_embedding"
    ident = helper.make_node("Identity", ["r"], [out_name])
    out = helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)
    nodes = [node, ident] if tower == "image" else [cast, node, ident]
    model = helper.make_model(helper.make_graph(nodes, "g", [inp], [out]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def tiny_pte(path):
    """A real ExecuTorch XNNPACK program with the image tower's I/O: pixels (1x3x256x256) -> embedding (1x4)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(3, 4)

        def forward(self, pixels):
            return self.proj(pixels.mean(dim=(2, 3)))

    program = torch.export.export(Tiny().eval(), (torch.rand(1, 3, 256, 256),))
    path.write_bytes(to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch().buffer)
    return path


def tiny_text_onnx(path):
    """ONNX Runtime text tower stand-in: tokens (1x77 int32) -> embedding (1x4)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(torch.randn(77, 4, generator=torch.Generator().manual_seed(0)).numpy(), "w")
    nodes = [helper.make_node("Cast", ["tokens"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["f", "w"], ["text_embedding"])]
    graph = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("tokens", TensorProto.INT32, [1, 77])],
                              [helper.make_tensor_value_info("text_embedding", TensorProto.FLOAT, [1, 4])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
