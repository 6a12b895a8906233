"""The linear-time scans against autograd and finite differences."""

from __future__ import annotations

import pytest
import torch

from captum_mamba.kernels.selective_scan import differentiable_selective_scan, linear_selective_scan


def _problem(batch=2, length=37, channels=5, state=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(batch, length, channels, generator=g, dtype=dtype),
        torch.rand(batch, length, channels, generator=g, dtype=dtype) * 0.6,
        -torch.rand(channels, state, generator=g, dtype=dtype) * 4,
        torch.randn(batch, length, state, generator=g, dtype=dtype),
        torch.randn(batch, length, state, generator=g, dtype=dtype),
    )


@pytest.mark.parametrize("chunk", [1, 5, 37, 128])
def test_linear_scan_matches_autograd_scan(chunk):
    u, delta, A, B, C = _problem()
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    y1, last1 = linear_selective_scan(u1, delta, A, B, C, chunk=chunk, return_last_state=True)
    y2, last2 = differentiable_selective_scan(u2, delta, A, B, C, chunk=7, return_last_state=True)
    torch.testing.assert_close(y1, y2, atol=1e-12, rtol=0)
    torch.testing.assert_close(last1, last2, atol=1e-12, rtol=0)
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, u1, upstream)
    (g2,) = torch.autograd.grad(y2, u2, upstream)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)


def test_linear_scan_gradcheck():
    u, delta, A, B, C = _problem(length=9)
    assert torch.autograd.gradcheck(lambda x: linear_selective_scan(x, delta, A, B, C, chunk=4), (u.requires_grad_(),))


def test_half_precision_inputs_are_scanned_in_float32():
    u, delta, A, B, C = _problem(dtype=torch.float32)
    y = linear_selective_scan(u.bfloat16(), delta.bfloat16(), A, B.bfloat16(), C.bfloat16())
    assert y.dtype == torch.float32
    reference = linear_selective_scan(u, delta, A, B, C)
    assert (y - reference).abs().max() < 0.05 * reference.abs().max()


@pytest.mark.parametrize("scale", [0.6, 20.0])
def test_segmented_chunks_of_a_long_sequence_match_the_step_by_step_recurrence(scale):
    # 600 steps: chunks of 256, 256 and 88 (segments of 16, 16 and 8, the last one padded to 96);
    # scale 20 makes many decays underflow to 0, which the segment totals must survive
    u, delta, A, B, C = _problem(batch=1, length=600, channels=4, state=3, seed=3)
    delta = delta * scale
    u1, u2 = u.clone().requires_grad_(), u.clone().requires_grad_()
    y1, last1 = linear_selective_scan(u1, delta, A, B, C, return_last_state=True)
    y2, last2 = differentiable_selective_scan(u2, delta, A, B, C, chunk=600, return_last_state=True)
    torch.testing.assert_close(y1, y2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(last1, last2, atol=1e-10, rtol=1e-10)
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, u1, upstream)
    (g2,) = torch.autograd.grad(y2, u2, upstream)
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-10)
    assert torch.isfinite(g1).all()


# --- Mamba-2 (SSD): the chunked held-constant scan against the step-by-step recurrence -------


def _heads_problem(batch=2, length=45, heads=6, head_dim=3, groups=2, state=4, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    return (
        torch.randn(batch, length, heads, head_dim, generator=g, dtype=f64),
        torch.rand(batch, length, heads, generator=g, dtype=f64) * 0.6 * scale,
        -torch.rand(heads, generator=g, dtype=f64) * 4,
        torch.randn(batch, length, groups, state, generator=g, dtype=f64),
        torch.randn(batch, length, groups, state, generator=g, dtype=f64),
    )


def _ssd_step_by_step(x, delta, A, B, C, D=None):
    """h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = h_t^T C_t + D x_t, one time step and head at a time."""
    delta, A, B, C = (t.detach() for t in (delta, A, B, C))  # the SSM rule: the selection is constant
    batch, length, heads, head_dim = x.shape
    per_group = heads // B.shape[2]
    skip = None if D is None else D.reshape(heads, -1)
    h = [torch.zeros(batch, B.shape[3], head_dim, dtype=x.dtype) for _ in range(heads)]
    ys = []
    for t in range(length):
        step = []
        for k in range(heads):
            b_t, c_t = B[:, t, k // per_group], C[:, t, k // per_group]  # (batch, state)
            decay = torch.exp(delta[:, t, k] * A[k])[:, None, None]
            h[k] = decay * h[k] + b_t[:, :, None] * (delta[:, t, k, None] * x[:, t, k])[:, None, :]
            y = (c_t[:, :, None] * h[k]).sum(1)
            step.append(y if skip is None else y + skip[k] * x[:, t, k])
        ys.append(torch.stack(step, 1))
    last = torch.stack(h, 1).transpose(-1, -2)  # (batch, heads, head_dim, state)
    return torch.stack(ys, 1), last


@pytest.mark.parametrize("scale", [1.0, 20.0])
@pytest.mark.parametrize("chunk", [1, 7, 16, 45, 64])
@pytest.mark.parametrize("skip", [None, "head", "channel"])
def test_chunked_ssd_matches_the_step_by_step_recurrence(chunk, scale, skip):
    # 45 steps: chunks of 7 and 16 leave a padded last chunk; scale 20 makes many decays underflow
    from captum_mamba.kernels.ssd import held_constant_ssd

    x, delta, A, B, C = _heads_problem(scale=scale)
    D = {None: None, "head": torch.randn(6, dtype=x.dtype), "channel": torch.randn(18, dtype=x.dtype)}[skip]
    fast, slow = x.clone().requires_grad_(), x.clone().requires_grad_()
    y1, last1 = held_constant_ssd(fast, delta, A, B, C, D, chunk=chunk)
    y2, last2 = _ssd_step_by_step(slow, delta, A, B, C, D)
    torch.testing.assert_close(y1, y2, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(last1, last2.detach(), atol=1e-10, rtol=1e-10)
    assert not last1.requires_grad
    upstream = torch.randn_like(y1)
    (g1,) = torch.autograd.grad(y1, fast, upstream)  # the transposed chunked scan
    (g2,) = torch.autograd.grad(y2, slow, upstream)  # autograd through the loop, selection detached
    torch.testing.assert_close(g1, g2, atol=1e-10, rtol=1e-10)


def test_chunked_ssd_gradcheck_and_selection_held_constant():
    from captum_mamba.kernels.ssd import held_constant_ssd

    x, delta, A, B, C = _heads_problem(length=9)
    held = [t.clone().requires_grad_() for t in (delta, A, B, C)]
    D = torch.randn(6, dtype=x.dtype, requires_grad=True)
    assert torch.autograd.gradcheck(lambda u: held_constant_ssd(u, *held, D, chunk=4)[0], (x.requires_grad_(),))
    y, _ = held_constant_ssd(x, *held, D, chunk=4)
    grads = torch.autograd.grad(y.sum(), [x, *held, D], allow_unused=True)
    assert grads[0] is not None and all(g is None for g in grads[1:])


def test_chunked_ssd_reads_strided_inputs_and_upcasts_half_precision():
    from captum_mamba.kernels.ssd import held_constant_ssd

    x, delta, A, B, C = _heads_problem(length=40, heads=4, groups=1)
    # x as the mixer passes it: a slice of a wider projection, reshaped into heads
    wide = torch.cat(
        [torch.randn(2, 40, 5, dtype=x.dtype), x.reshape(2, 40, 12), torch.randn(2, 40, 2, dtype=x.dtype)], -1
    )
    strided = wide[..., 5:17].reshape(2, 40, 4, 3)
    assert not strided.is_contiguous()
    y, last = held_constant_ssd(strided, delta, A, B, C, chunk=16)
    reference, reference_last = _ssd_step_by_step(x, delta, A, B, C)
    torch.testing.assert_close(y, reference, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(last, reference_last, atol=1e-10, rtol=1e-10)
    y16, _ = held_constant_ssd(*(t.float().bfloat16() for t in (x, delta)), A.float(), B.bfloat16(), C.bfloat16())
    assert y16.dtype == torch.float32
    assert (y16.double() - reference).abs().max() < 0.05 * reference.abs().max()


def test_chunked_ssd_memory_for_the_backward_is_linear_in_length():
    # what the backward keeps (save_for_backward, so memory-lean checkpointing can drop it) grows
    # linearly: the (Q, Q) blocks are per chunk, never (length, length)
    from captum_mamba.kernels.ssd import held_constant_ssd

    def saved_elements(length: int) -> int:
        x, delta, A, B, C = _heads_problem(batch=1, length=length)
        sizes = []

        def pack(t):
            sizes.append(t.numel())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            held_constant_ssd(x.requires_grad_(), delta, A, B, C, chunk=16)
        return sum(sizes)

    assert saved_elements(1024) == 4 * saved_elements(256)
