"""Fused Triton soft-argmax kernels against the PyTorch path.

On CPU the kernels run in Triton's interpreter: the ``interpret`` fixture sets TRITON_INTERPRET=1
for each CPU test only (the kernel module decides per call whether to interpret, so the variable
does not need to be set before Triton is imported and does not leak into other tests). On a CUDA
machine every test also runs on the GPU with the compiled kernels (benchmarks/gpu_check.sh).
Shapes are small because the interpreter is slow, but awkward: sizes that are not powers of two,
1x1 maps, K = 1, chunks that end mid-block, the split (two-stage) reduction forced on tiny maps.
"""
import importlib
import os
import re
import subprocess
import tempfile
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton", reason="triton is not installed (pip install 'integral-pose[triton]')")

from integral_pose import soft_argmax  # noqa: E402
from integral_pose.ops.kernels import triton_soft_argmax as tsa  # noqa: E402
from integral_pose.ops.soft_argmax import _soft_argmax_torch  # noqa: E402

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch):
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return torch.device(request.param)


def _fused(x, beta, block=0, split=0):
    return tsa.TritonSoftArgmax.apply(x, beta, block, split)


def _both(x, beta, block=0, split=0, grad=None):
    """(values, grads) of the fused kernel and of the PyTorch path for the same upstream grad."""
    a = x.detach().clone().requires_grad_()
    b = x.detach().clone().requires_grad_()
    ya = _fused(a, beta, block, split)
    yb = _soft_argmax_torch(b, beta)
    g = torch.randn_like(yb) if grad is None else grad
    ya.backward(g)
    yb.backward(g)
    return ya, yb, a.grad, b.grad


# (shape, beta, block, split): block/split 0 = the launch heuristic; small blocks force several
# loop steps with a ragged last block, split > 1 forces the two-stage reduction.
CASES = [
    ((2, 3, 5, 7), 1.0, 0, 0),
    ((2, 3, 5, 7), 1.7, 16, 2),
    ((1, 1, 1, 1), 1.0, 0, 0),  # 1x1 map, K = 1
    ((3, 1, 13), 0.6, 16, 1),  # 1D, K = 1
    ((2, 2, 29), -0.8, 16, 2),  # 1D, negative beta: padding lanes must still add nothing
    ((1, 2, 3, 5, 7), 1.3, 16, 3),  # 3D, three chunks, the last one ragged
    ((1, 1, 1, 1, 1), 2.0, 0, 0),  # 1x1x1 volume
    ((2, 1, 1, 9), 1.0, 16, 1),  # H = 1
    ((1, 3, 9, 1), 1.0, 0, 0),  # W = 1
    ((1, 2, 4, 3, 6), 0.0, 16, 2),  # beta = 0: uniform, centre of the volume
]


@pytest.mark.parametrize("shape,beta,block,split", CASES, ids=lambda v: str(v).replace(" ", ""))
def test_matches_torch_fp32(device, shape, beta, block, split):
    torch.manual_seed(0)
    x = (torch.randn(shape) * 3).to(device)
    ya, yb, ga, gb = _both(x, beta, block, split)
    assert ya.shape == (shape[0], shape[1], len(shape) - 2) and ya.dtype == torch.float32
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5)
    assert ga.dtype == x.dtype and ga.shape == x.shape
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


def test_both_paths_agree_with_float64_truth(device):
    # The fused kernel must not be less accurate than the PyTorch path it replaces.
    torch.manual_seed(1)
    x = (torch.randn(2, 3, 17, 11) * 4).to(device)
    truth = _soft_argmax_torch(x.double(), 2.0)
    err_fused = (_fused(x, 2.0, 16, 2).double() - truth).abs().max().item()
    err_torch = (_soft_argmax_torch(x, 2.0).double() - truth).abs().max().item()
    assert err_fused <= max(2 * err_torch, 2e-6), (err_fused, err_torch)


def test_fp32_accuracy_on_a_64_cubed_volume(device):
    # The anchor's 3D size: 262 144 cells per joint, the heuristic's split path. Per-lane fp32
    # accumulators with a final tree reduction keep the result within 1e-5 cells of float64.
    torch.manual_seed(11)
    x = (torch.randn(1, 1, 64, 64, 64) * 3).to(device)
    truth = _soft_argmax_torch(x.double(), 1.0)
    out = tsa.triton_soft_argmax(x, 1.0)
    assert (out.double() - truth).abs().max().item() <= 1e-5


def test_non_contiguous_input(device):
    torch.manual_seed(2)
    x = (torch.randn(2, 3, 7, 5) * 2).to(device).transpose(-1, -2)  # (2, 3, 5, 7), not contiguous
    ya, yb, ga, gb = _both(x, 1.0)
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)


def test_empty_batch(device):
    x = torch.zeros(0, 3, 4, 5, device=device, requires_grad=True)
    y = _fused(x, 1.0)
    assert y.shape == (0, 3, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("split", [1, 2])
def test_large_logits_stay_finite(device, split):
    # |logits| ~ 1e4 with near ties: exp must be taken after the max is subtracted.
    torch.manual_seed(3)
    x = torch.full((2, 2, 6, 5), -1e4)
    x[0, 0, 2, 3] = 1e4
    x[0, 1] = 1e4 + torch.randn(6, 5)  # ties at 1e4: fp32 spacing there is ~1e-3
    x[1, 0] = torch.randn(6, 5).sign() * 1e4
    x[1, 1, 5, 4] = -1e4 + 1.0  # all -1e4 except one cell one unit higher
    x = x.to(device)
    ya, yb, ga, gb = _both(x, 1.0, 16, split)
    assert torch.isfinite(ya).all() and torch.isfinite(ga).all()
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5)
    torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ya[0, 0], torch.tensor([3.0, 2.0], device=device))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:divide by zero encountered:RuntimeWarning")
@pytest.mark.parametrize("split", [1, 3])
def test_non_finite_logits_give_nan_for_exactly_those_joints(device, split):
    torch.manual_seed(4)
    x = torch.randn(2, 3, 6, 5)
    x[0, 1, 2, 3] = float("nan")
    x[1, 0, 5, 0] = float("inf")
    x[1, 2] = float("-inf")  # -inf everywhere
    x[0, 2, :3] = float("-inf")  # -inf in the first chunks only: still a valid distribution
    x = x.to(device)
    ya, yb, ga, gb = _both(x, 1.0, 16, split, grad=torch.ones(2, 3, 2, device=device))
    bad = torch.tensor([[False, True, False], [True, False, True]], device=device)
    assert torch.equal(ya.isnan().any(-1), bad) and torch.equal(ya.isnan().all(-1), bad)
    torch.testing.assert_close(ya[~bad], yb[~bad], rtol=0, atol=1e-5)
    torch.testing.assert_close(ga[~bad], gb[~bad], rtol=1e-5, atol=1e-5)
    assert torch.equal(ga.isnan().flatten(2).any(-1), gb.isnan().flatten(2).any(-1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_computes_in_fp32(device, dtype):
    torch.manual_seed(5)
    x = (torch.randn(2, 3, 9, 7) * 3).to(device=device, dtype=dtype)
    ya, yb, ga, gb = _both(x, 1.0, 16, 2)
    assert ya.dtype == torch.float32 and ga.dtype == dtype
    # Same fp32 arithmetic on the same upcast values: the coordinates agree to fp32 accuracy.
    torch.testing.assert_close(ya, yb, rtol=0, atol=1e-5)
    # Gradients are rounded once to the input dtype by both paths: one unit in the last place.
    tol = torch.finfo(dtype).eps * gb.abs().max().item()
    torch.testing.assert_close(ga.float(), gb.float(), rtol=0, atol=tol)


def test_gradcheck_float64(device):
    torch.manual_seed(6)
    for shape, block, split in [((1, 2, 3, 4), 0, 0), ((1, 1, 2, 3, 5), 16, 2)]:
        x = torch.randn(shape, dtype=torch.float64, device=device, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t: _fused(t, 1.5, block, split), (x,), fast_mode=True)


def test_soft_argmax_dispatches_to_triton(device):
    torch.manual_seed(7)
    x = torch.randn(2, 3, 6, 5, device=device)
    torch.testing.assert_close(soft_argmax(x, 1.2, backend="triton"), soft_argmax(x, 1.2, backend="torch"),
                               rtol=0, atol=1e-5)


def test_custom_ops_opcheck(device):
    torch.manual_seed(8)
    x = torch.randn(2, 3, 5, 7, device=device)
    torch.library.opcheck(torch.ops.integral_pose.triton_soft_argmax_fwd.default, (x, 1.0, 16, 2))
    out, stats = tsa._launch_forward(x, 1.0)
    g = torch.randn_like(out)
    torch.library.opcheck(torch.ops.integral_pose.triton_soft_argmax_bwd.default, (x, g, out, stats, 1.0, 0, 0))


def test_torch_compile_fullgraph(device):
    torch._dynamo.reset()

    def loss(x):
        # Ops around the kernel so that inductor generates code on both sides of the custom op.
        return soft_argmax(x * 2.0 + 1.0, beta=0.5, backend="triton").square().sum()

    torch.manual_seed(9)
    x = torch.randn(2, 3, 5, 7, device=device, requires_grad=True)
    compiled = torch.compile(loss, fullgraph=True)
    y = compiled(x)
    (g,) = torch.autograd.grad(y, x)
    y_ref = _soft_argmax_torch(x * 2.0 + 1.0, 0.5).square().sum()
    (g_ref,) = torch.autograd.grad(y_ref, x)
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-5)


def test_autocast(device):
    torch.manual_seed(10)
    conv = torch.nn.Conv2d(3, 4, 3, padding=1).to(device)
    img = torch.randn(2, 3, 6, 5, device=device)
    low = torch.bfloat16 if device.type == "cpu" else torch.float16
    with torch.autocast(device.type, dtype=low):
        h = conv(img)
        y = soft_argmax(h, backend="triton")
    assert h.dtype == low and y.dtype == torch.float32
    torch.testing.assert_close(y, _soft_argmax_torch(h, 1.0), rtol=0, atol=1e-5)


def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        soft_argmax(torch.zeros(1, 1, 3, 3), backend="triton")


def test_launch_plan_fills_a_large_gpu():
    # 3D 64^3 maps: B*K = 544 joints alone would be ~4 programs per SM on a 132-SM H100.
    h100 = 132
    tsa_num_sms = tsa._num_sms
    try:
        tsa._num_sms = lambda device: h100
        block, nsplit, chunk = tsa._plan(32 * 17, 64 ** 3, tsa._FWD_BLOCK_MAX, torch.device("cuda"))
        assert 32 * 17 * nsplit >= 8 * h100 and chunk % block == 0 and (nsplit - 1) * chunk < 64 ** 3 <= nsplit * chunk
        block, nsplit, chunk = tsa._plan(64 * 17, 64 * 48, tsa._FWD_BLOCK_MAX, torch.device("cuda"))
        assert nsplit == 1 and chunk >= 64 * 48  # small 2D maps: one program per joint, no second stage
    finally:
        tsa._num_sms = tsa_num_sms


def _ptxas() -> Path | None:
    nv = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    for name in ("ptxas-blackwell", "ptxas"):
        if (nv / name).exists():
            return nv / name
    return None


@pytest.mark.filterwarnings("ignore:TRITON_DEFAULT_FP_FUSION:UserWarning")
@pytest.mark.skipif(_ptxas() is None, reason="triton has no bundled NVIDIA backend (ptxas)")
@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                    reason="TRITON_INTERPRET=1 in the environment: triton.language was imported in interpreter mode")
def test_kernels_compile_for_h100_without_spills():
    """The interpreter accepts code the compiler rejects: compile every variant for sm_90 here."""
    import triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    fwd, combine, bwd = tsa._kernels(False)
    target = GPUTarget("cuda", 90, 32)

    def build(fn, sig, consts, warps=4):
        names = list(sig)
        src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items()})
        kernel = triton.compile(src, target=target, options={"num_warps": warps})
        with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
            f.write(kernel.asm["ptx"])
        res = subprocess.run([str(_ptxas()), "-v", "--gpu-name=sm_90a", f.name, "-o", "/dev/null"],
                             capture_output=True, text=True)
        Path(f.name).unlink()
        spills = re.findall(r"(\d+) bytes spill stores", res.stderr)
        if res.returncode == 0:  # an older bundled ptxas may not read this PTX version: compiled is enough
            assert spills and all(int(s) == 0 for s in spills), res.stderr

    c = "constexpr"
    # Every dimensionality in fp32 (the 2D map single-stage, the others two-stage), 3D also in bf16.
    for xdt, ndim, w, h, single in (("fp32", 1, 13, 1, False), ("fp32", 2, 48, 64, True),
                                     ("fp32", 3, 64, 64, False), ("bf16", 3, 64, 64, False)):
        sig = dict(x_ptr="*" + xdt, out_ptr="*fp32", stats_ptr="*fp32", N="i32", chunk="i32", beta="fp32",
                   NSPLIT="i32", W=c, H=c, NDIM=c, BLOCK=c, SINGLE=c, ACC=c)
        build(fwd, sig, dict(W=w, H=h, NDIM=ndim, BLOCK=2048, SINGLE=single, ACC=tl.float32), warps=8)
        sig = dict(x_ptr="*" + xdt, g_ptr="*fp32", out_ptr="*fp32", stats_ptr="*fp32", dx_ptr="*" + xdt,
                   N="i32", chunk="i32", beta="fp32", W=c, H=c, NDIM=c, BLOCK=c, ACC=c)
        build(bwd, sig, dict(W=w, H=h, NDIM=ndim, BLOCK=1024, ACC=tl.float32))
    sig = dict(part_ptr="*fp32", out_ptr="*fp32", stats_ptr="*fp32", NSPLIT="i32", NDIM=c, P2=c, ACC=c)
    build(combine, sig, dict(NDIM=3, P2=8, ACC=tl.float32), warps=1)


# ---------------------------------------------------------------------------------------------
# backend="auto": the kernel only after its one-time self-check on that device, dtype and rank
# ---------------------------------------------------------------------------------------------

def test_self_check_passes_and_is_remembered(monkeypatch):
    sa = importlib.import_module("integral_pose.ops.soft_argmax")

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(sa, "_TRITON_CHECKED", {})
    assert sa.triton_self_check("cpu", torch.float32, 1)
    calls = []
    monkeypatch.setattr(tsa, "triton_soft_argmax", lambda *a: calls.append(a))
    assert sa.triton_self_check("cpu", torch.float32, 1) and not calls  # remembered: not run again


@pytest.mark.parametrize("broken", ["wrong", "raises"])
def test_self_check_falls_back_with_one_warning(monkeypatch, broken):
    sa = importlib.import_module("integral_pose.ops.soft_argmax")

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(sa, "_TRITON_CHECKED", {})

    def bad(x, beta=1.0):
        if broken == "raises":
            raise RuntimeError("PTX compile error\nsecond line")
        return _soft_argmax_torch(x, beta) + 0.5

    monkeypatch.setattr(tsa, "triton_soft_argmax", bad)
    with pytest.warns(RuntimeWarning, match="not used on cpu for torch.float32 2D maps") as rec:
        assert not sa.triton_self_check("cpu", torch.float32, 2)
    assert len(rec) == 1 and ("disagrees" in str(rec[0].message)) == (broken == "wrong")
    assert "\n" not in str(rec[0].message)
    assert not sa.triton_self_check("cpu", torch.float32, 2)  # remembered, no second warning


def test_auto_uses_the_kernel_only_where_checked(monkeypatch):
    sa = importlib.import_module("integral_pose.ops.soft_argmax")

    x = torch.randn(1, 2, 4, 5)
    assert not sa._use_triton(x, "auto")  # CPU tensors: the PyTorch path, no check at all
    assert sa._use_triton(x, "triton")  # forced
    # a CUDA tensor whose check failed goes to PyTorch; one that passed, to the kernel
    fake = type("FakeCuda", (), {"device": torch.device("cuda", 0), "dtype": torch.float32, "dim": lambda self: 4})()
    monkeypatch.setattr(sa, "_TRITON_CHECKED", {("cuda:0", torch.float32, 2): False})
    assert not sa._use_triton(fake, "auto")
    monkeypatch.setattr(sa, "_TRITON_CHECKED", {("cuda:0", torch.float32, 2): True})
    assert sa._use_triton(fake, "auto")
