"""The Core ML program executor (runtimes/coreml_program.py): every own kernel against PyTorch, the decompression
ops against values computed here from their definition, the fp16 models' overflow and accumulation, and S0's
image tower (golden weights) executed from its saved .mlpackage against the folded PyTorch tower."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ct = pytest.importorskip("coremltools")
from coremltools.converters.mil import Builder as mb  # noqa: E402
from coremltools.converters.mil.mil import types  # noqa: E402

from mobileclip_deploy.runtimes import coreml_program as cp  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
RNG = np.random.default_rng(0)


def _run(build, *inputs: np.ndarray, target=None, model: str | None = None, **kw) -> tuple[np.ndarray, cp.Program]:
    """Build a one-function MIL program from `build(*vars)` and execute it on `inputs`."""
    specs = [mb.TensorSpec(shape=x.shape, dtype=types.fp16 if x.dtype == np.float16 else
                           types.int32 if x.dtype == np.int32 else types.fp32) for x in inputs]

    def one(x):
        return build(x)

    def two(x, y):
        return build(x, y)

    prog = mb.program(input_specs=specs, opset_version=target or ct.target.iOS17)((one, two)[len(inputs) - 1])

    program = cp.Program(prog)
    feeds = dict(zip(program.input_names, inputs))
    return program.run(feeds, model, **kw)[program.output_names[0]], program


def _close(out: np.ndarray, ref: torch.Tensor, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(out, ref.numpy(), rtol=tol, atol=tol * float(ref.abs().max()))


@pytest.mark.parametrize("pad_type,pad,strides,dilations,groups", [
    ("valid", None, [1, 1], [1, 1], 1),
    ("custom", [1, 2, 0, 3], [2, 1], [1, 1], 2),
    ("same", None, [2, 2], [1, 1], 4),  # depthwise, stride 2: "same" pads the odd total at the end
    ("same_lower", None, [2, 2], [1, 1], 1),
    ("same", None, [1, 1], [2, 3], 1),
])
def test_conv_matches_pytorch(pad_type, pad, strides, dilations, groups):
    x = RNG.standard_normal((1, 4, 9, 10)).astype(np.float32)
    w = RNG.standard_normal((8, 4 // groups, 3, 4)).astype(np.float32)
    b = RNG.standard_normal(8).astype(np.float32)
    kwargs = {"pad": np.array(pad, np.int32)} if pad else {}
    out, _ = _run(lambda v: mb.conv(x=v, weight=w, bias=b, strides=strides, dilations=dilations, groups=groups,
                                    pad_type=pad_type, **kwargs), x, target=ct.target.iOS17)
    xt = torch.from_numpy(x)
    if pad_type == "custom":
        xt = F.pad(xt, [pad[2], pad[3], pad[0], pad[1]])
    elif pad_type != "valid":
        widths = []
        for size, k, s, d in zip(x.shape[2:], w.shape[2:], strides, dilations):
            total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
            lo = total // 2 if pad_type == "same" else total - total // 2
            widths = [lo, total - lo] + widths
        xt = F.pad(xt, widths)
    ref = F.conv2d(xt, torch.from_numpy(w), torch.from_numpy(b), strides, 0, dilations, groups)
    assert out.shape == tuple(ref.shape)
    _close(out, ref)


def test_linear_matmul_batch_norm_gelu_match_pytorch():
    x = RNG.standard_normal((2, 5, 6)).astype(np.float32)
    w = RNG.standard_normal((7, 6)).astype(np.float32)
    b = RNG.standard_normal(7).astype(np.float32)
    out, _ = _run(lambda v: mb.linear(x=v, weight=w, bias=b), x)
    _close(out, F.linear(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b)))

    y = RNG.standard_normal((2, 4, 6)).astype(np.float32)
    out, _ = _run(lambda u, v: mb.matmul(x=u, y=v, transpose_y=True), x, y)
    _close(out, torch.from_numpy(x) @ torch.from_numpy(y).transpose(-1, -2))

    img = RNG.standard_normal((1, 3, 4, 4)).astype(np.float32)
    mean, var, gamma, beta = (RNG.uniform(0.5, 1.5, 3).astype(np.float32) for _ in range(4))
    out, _ = _run(lambda v: mb.batch_norm(x=v, mean=mean, variance=var, gamma=gamma, beta=beta, epsilon=1e-3), img)
    _close(out, F.batch_norm(torch.from_numpy(img), torch.from_numpy(mean), torch.from_numpy(var),
                             torch.from_numpy(gamma), torch.from_numpy(beta), eps=1e-3))

    for mode, ref in [("EXACT", F.gelu(torch.from_numpy(x))),
                      ("TANH_APPROXIMATION", F.gelu(torch.from_numpy(x), approximate="tanh")),
                      ("SIGMOID_APPROXIMATION", torch.from_numpy(x) * torch.sigmoid(1.702 * torch.from_numpy(x)))]:
        out, _ = _run(lambda v, mode=mode: mb.gelu(x=v, mode=mode), x)
        _close(out, ref)


def test_reductions_and_gather_nd_match_pytorch():
    x = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
    t = torch.from_numpy(x)
    for op, axes, ref in [(mb.reduce_mean, [2, 3], t.mean(dim=(2, 3), keepdim=True)),
                          (mb.reduce_sum, [1], t.sum(dim=(1,))), (mb.reduce_max, [-1], t.amax(dim=-1, keepdim=True))]:
        keep = ref.ndim == x.ndim
        out, _ = _run(lambda v, op=op, axes=axes, keep=keep: op(x=v, axes=axes, keep_dims=keep), x)
        _close(out, ref)
    table = RNG.standard_normal((10, 4)).astype(np.float32)
    idx = np.array([[[3], [0]], [[9], [3]]], np.int32)
    out, _ = _run(lambda i: mb.gather_nd(x=table, indices=i), idx)
    _close(out, torch.from_numpy(table)[torch.from_numpy(idx[..., 0]).long()])


def _decoded(build, tmp_path: Path, name: str) -> np.ndarray:
    """The 6x4 weight `build()` makes, as the program decodes it after a round trip through an .mlpackage
    (read out as `identity @ weight.T`)."""
    @mb.program(input_specs=[mb.TensorSpec(shape=(4, 4))], opset_version=ct.target.iOS18)
    def prog(x):
        return mb.linear(x=x, weight=build())

    ml = ct.convert(prog, convert_to="mlprogram", minimum_deployment_target=ct.target.iOS18,
                    compute_precision=ct.precision.FLOAT32, pass_pipeline=ct.PassPipeline.EMPTY,
                    skip_model_load=True)
    path = tmp_path / f"{name}.mlpackage"
    ml.save(str(path))
    program = cp.Program.load(path)
    return program.run({"x": np.eye(4, dtype=np.float32)})[program.output_names[0]].T


def test_decompression_ops_decode_what_their_definition_says(tmp_path):
    """4-bit palettes with one LUT per group of output channels, int8 blocks with scale and offset: decoded from
    the saved file by the program, compared with the dense weights computed here from the same numbers."""
    indices = RNG.integers(0, 16, (6, 4)).astype(types.np_uint4_dtype)
    lut = RNG.standard_normal((2, 1, 16, 1)).astype(np.float32)  # output channels 0-2 and 3-5 share a palette
    dense = np.stack([lut[o // 3, 0, indices[o].astype(np.int64), 0] for o in range(6)])
    decoded = _decoded(lambda: mb.constexpr_lut_to_dense(indices=indices, lut=lut), tmp_path, "lut")
    np.testing.assert_array_equal(decoded, dense)

    data = RNG.integers(-128, 128, (6, 4)).astype(np.int8)
    scale = RNG.uniform(0.01, 0.1, (6, 2)).astype(np.float32)  # blocks of 2 input channels
    offset = RNG.integers(-3, 3, (6, 2)).astype(np.int8)
    expected = (data.astype(np.float32) - np.repeat(offset, 2, axis=1)) * np.repeat(scale, 2, axis=1)
    decoded = _decoded(lambda: mb.constexpr_blockwise_shift_scale(data=data, scale=scale, offset=offset), tmp_path,
                       "int8")
    np.testing.assert_allclose(decoded, expected, rtol=1e-6)


def test_fp16_overflow_is_named_and_native_accumulation_differs():
    x = np.full((1, 8), 10.0, np.float16)
    out, program = _run(lambda v: mb.mul(x=mb.mul(x=v, y=np.float16(300), name="first"), y=np.float16(300),
                                         name="second"), x)
    assert not np.isfinite(out).any()
    report = program.reports[cp.LENIENT].to_dict()
    assert report["first_overflow"]["op"] == "second" and report["first_overflow"]["overflow"] == 8

    # 32 products of +3000 then 32 of -3000: fp32 accumulation ends at 0, fp16 accumulation overflows at 96000.
    a = np.concatenate([np.full(32, 3000.0), np.full(32, -3000.0)]).astype(np.float16)[None]
    ones = np.ones((1, 64), np.float32)
    lenient, program = _run(lambda v: mb.linear(x=v, weight=ones.astype(np.float16)), a)
    native, _ = _run(lambda v: mb.linear(x=v, weight=ones.astype(np.float16)), a, model=cp.NATIVE)
    assert lenient.item() == 0 and not np.isfinite(native).all()
    assert program.reports[cp.LENIENT].first_overflow is None

    tiny = np.full((1, 4), 1e-3, np.float16)
    flushed, program = _run(lambda v: mb.mul(x=v, y=np.float16(1e-2)), tiny, model=cp.NATIVE)
    assert (flushed == 0).all() and program.reports[cp.NATIVE].to_dict()["underflow_values"] == 4


@pytest.fixture(scope="module")
def s0_image(shared_dir: Path, module_tmp):
    """S0's folded image tower (golden weights) and its fp32 .mlpackage."""
    from goldens import make_golden_state_dict, manifest_path

    from mobileclip_deploy import create_model, reparameterize
    from mobileclip_deploy.exporters import coreml as coreml_exp
    from mobileclip_deploy.exporters.fold import fold_affine
    from mobileclip_deploy.exporters.wrappers import example_input, tower_module
    from mobileclip_deploy.registry import get_variant

    folder = module_tmp("s0_coreml")
    checkpoint = folder / "s0.pt"
    torch.save(make_golden_state_dict(manifest_path(shared_dir, "mobileclip_s0")), checkpoint)
    variant = get_variant("mobileclip-s0")
    tower = tower_module(reparameterize(create_model("mobileclip-s0", checkpoint=checkpoint)).eval(), "image",
                         variant.image_size, variant.context_length)
    path = folder / "s0_image_fp32.mlpackage"
    meta = {"description": "test", "license": "test", "author": "test", "version": "0"}
    coreml_exp.export(fold_affine(tower), example_input("image", variant.image_size, variant.context_length),
                      "image", "fp32", path, "iOS17", False, meta)
    return tower, path


def test_s0_image_program_matches_pytorch(s0_image, shared_dir: Path):
    from mobileclip_deploy import runtimes

    tower, path = s0_image
    images = np.load(shared_dir / "reference" / "goldens" / "mobileclip_s0.npz")["image"][:2]
    runner = runtimes.load(path)
    assert runner.info["runtime"] == "coreml-program" and runner.info["precision"] == "fp32"
    out = runner.batched(images)
    with torch.no_grad():
        ref = tower(torch.from_numpy(images)).numpy()
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.99999
    assert cp._cosine(ref[0], ref[1]) < 0.99  # the two inputs give different embeddings: the check can fail


def test_native_fp16_is_reported_on_the_first_inputs_and_fp16_storage_judges_all(tmp_path):
    from helpers import entries, export

    (result,) = export(tmp_path, ["coreml:fp16"], towers=("text",))
    parity = entries(tmp_path)[result.file]["parity"]
    program = parity["program"]
    assert program["judged_model"] == cp.LENIENT and parity["count"] > cp.NATIVE_INPUTS
    assert program["native_inputs"] == cp.NATIVE_INPUTS and 0.99 < program["native_min_cosine"] <= 1.0
    assert set(program["fp16"]) == {cp.LENIENT, cp.NATIVE}
