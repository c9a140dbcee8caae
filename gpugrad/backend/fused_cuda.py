"""The fused ops on CUDA: launchers for ``kernels/*.cu`` (compiled by CuPy's NVRTC, cached).

Same signatures and numerics as ``fused_reference``; arrays are cupy arrays on one device.
Scalars passed to kernels are numpy scalars whose dtype matches the C parameter exactly (int64 <->
long long, int32 <-> int, float32/float64 <-> float/double); a null pointer is ``np.uint64(0)``.
Half inputs: sigmoid and the optimizers have float16/bfloat16 kernels (float32 math inside);
cross-entropy and BCE convert half inputs to float32 here and round the results back.
The optimizers' cached device pointer tables (one launch per dtype group): ``fused_cuda_tables``.
"""

from __future__ import annotations

import functools

import cupy
import numpy as np

from . import checks, kernels
from .errors import label_error
from .fused_cuda_tables import CHUNK, grad_table, static_table
from .fused_reference import (
    _adam_bias_terms,
    _check_bce_args,
    _check_bce_gy,
    _check_ce_args,
    _check_ce_gy,
    _float_dtype,
)
from .fused_reference import _check_group as _check_group_shapes

#: Test hook: when True, every output buffer is filled with NaN before the kernel that must write
#: all of it runs, so an element a kernel forgets shows up as NaN instead of stale memory.
POISON_OUTPUTS = False

_NULL = np.uint64(0)
_THREADS = 256
_REDUCE_THREADS = 1024  # the finalize kernels' fixed tree shape: never change per device
_BCE_MAX_PARTIALS = 1024
_CE_SMALL_MAX_C = 32
_CE_WARP_MAX_C = 1024
_CE_WARPS_PER_BLOCK = 8
_CE_BLOCK_MAX = {"f32": 1024, "f64": 512}  # ce_block's __launch_bounds__ per dtype
_CE_INLINE_COUNT = 1 << 18  # label reads (N * blocks) below which blocks count rows themselves
_DEFAULT_SMEM = 48 * 1024
_STATIC_SMEM_RESERVE = 1024  # the kernels' static shared arrays use at most 768 bytes
_F32, _F64, _F16 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16)


def _suffix(dt: np.dtype) -> str | None:
    if dt == _F32:
        return "f32"
    if dt == _F64:
        return "f64"
    if dt == _F16:
        return "f16"
    return "bf16" if dt.name == "bfloat16" else None


def _acc_scalar(dt: np.dtype):
    return np.float64 if dt == _F64 else np.float32


@functools.cache
def _props(dev_id: int) -> tuple[int, int, int]:
    """(SM count, max threads per SM, opt-in shared memory per block) of one device."""
    attrs = cupy.cuda.Device(dev_id).attributes
    return (
        int(attrs.get("MultiProcessorCount", 80)),
        int(attrs.get("MaxThreadsPerMultiProcessor", 2048)),
        int(attrs.get("MaxSharedMemoryPerBlockOptin", _DEFAULT_SMEM)),
    )


def _fn(family: str, name: str, dev_id: int):
    return kernels.get_function(family, name, dev_id)


_smem_allowed: dict[tuple[str, int], int] = {}


def _allow_smem(fn, key: tuple[str, int], nbytes: int) -> None:
    """Raise the kernel's dynamic shared-memory limit when dynamic + static could pass the 48 KiB
    a launch gets by default. The limit set is remembered per (kernel, device): the driver is
    called when a launch needs more than before, not on every large launch."""
    if nbytes + _STATIC_SMEM_RESERVE <= _DEFAULT_SMEM or _smem_allowed.get(key, 0) >= nbytes:
        return
    fn.max_dynamic_shared_size_bytes = nbytes
    _smem_allowed[key] = nbytes


def _empty(shape, dtype) -> cupy.ndarray:
    out = cupy.empty(shape, dtype)
    if POISON_OUTPUTS and out.size:
        out.fill(np.nan)
    return out


def _contig(a) -> cupy.ndarray:
    """C-contiguous ``a`` without a copy when it already is; 0-d arrays stay 0-d."""
    return a if a.flags.c_contiguous else cupy.ascontiguousarray(a)


def _aligned(*arrays) -> bool:
    return all(a is None or a.data.ptr % 16 == 0 for a in arrays)


def _ptr(a):
    return _NULL if a is None else a


_resident: dict[tuple, int] = {}


def _grid_elementwise(fn, key: tuple, work: int, dev_id: int) -> int:
    """Exactly one resident wave of 256-thread blocks (the occupancy API's count), capped by the
    work: grid-stride loops then give every block the same share, with no half-empty last wave."""
    per_sm = _resident.get(key)
    if per_sm is None:
        try:
            per_sm = int(cupy.cuda.driver.occupancyMaxActiveBlocksPerMultiprocessor(
                fn.kernel.ptr, _THREADS, 0))  # fmt: skip
        except Exception:  # an older CuPy without the call: assume the thread limit binds
            per_sm = _props(dev_id)[1] // _THREADS
        _resident[key] = per_sm = max(1, per_sm)
    return max(1, min(-(-work // _THREADS), _props(dev_id)[0] * per_sm))


# ---------------------------------------------------------------------------------------------
# sigmoid


def _sigmoid_launch(name: str, *arrays) -> cupy.ndarray:
    """Elementwise launch over contiguous ``arrays`` (inputs) into a new output of their shape."""
    a0 = arrays[0]
    out = _empty(a0.shape, a0.dtype)
    n = a0.size
    if n:
        vec = _aligned(*arrays, out)
        dev = a0.device.id
        work = n // (16 // a0.itemsize)  # threads walk 16-byte packs, vector loads or not
        kname = f"{name}_{_suffix(a0.dtype)}"
        fn = _fn("sigmoid", kname, dev)
        grid = _grid_elementwise(fn, (kname, dev), work, dev)
        fn((grid,), (_THREADS,), (*arrays, out, np.int64(n), np.int32(vec)))
    return out


def sigmoid_forward(x: cupy.ndarray) -> cupy.ndarray:
    _float_dtype(x, "sigmoid", "input")
    if _suffix(x.dtype) is None:  # any other float type: float32 math
        return sigmoid_forward(x.astype(np.float32)).astype(x.dtype)
    with x.device:
        return _sigmoid_launch("sigmoid_fwd", _contig(x))


def sigmoid_backward(y: cupy.ndarray, gy: cupy.ndarray) -> cupy.ndarray:
    _float_dtype(y, "sigmoid_backward", "y")
    if gy.shape != y.shape:
        raise ValueError(f"sigmoid_backward: gy shape {gy.shape} != y shape {y.shape}")
    if _suffix(y.dtype) is None:
        return sigmoid_backward(y.astype(np.float32), gy.astype(np.float32)).astype(y.dtype)
    with y.device:
        y = _contig(y)
        return _sigmoid_launch("sigmoid_bwd", y, _contig(gy.astype(y.dtype, copy=False)))


# ---------------------------------------------------------------------------------------------
# softmax cross-entropy


def _ce_inputs(logits, labels, reduction: str):
    _check_ce_args(logits, labels, reduction)
    cd = logits.dtype if logits.dtype in (_F32, _F64) else _F32
    x = _contig(logits.astype(cd, copy=False))
    lab = _contig(labels.astype(np.int64, copy=False))
    return x, lab


def _ce_finalize(x, lab, ignore_index: int, loss_rows, out, mean: bool, meta) -> None:
    N, C = x.shape
    _fn("softmax_cross_entropy", f"ce_finalize_{_suffix(x.dtype)}", x.device.id)(
        (1,),
        (_REDUCE_THREADS,),
        (lab, np.int64(N), np.int64(C), np.int64(ignore_index), _ptr(loss_rows), _ptr(out),
         np.int32(mean), meta),
    )  # fmt: skip


def _ce_rows(x, lab, ignore_index: int, loss_rows, grad, gy, gy_mode: int, mean: bool, meta):
    """Launch the row kernel for C's regime. ``meta`` (int64[2]) receives the row count first when
    a mean gradient needs it and the blocks are too many to count the labels themselves."""
    N, C = x.shape
    dev = x.device.id
    sfx = _suffix(x.dtype)
    item = x.itemsize
    V = 16 // item
    need_count = mean and grad is not None
    if C <= _CE_SMALL_MAX_C:
        W = 1 << max(0, C - 1).bit_length()
        rows_per_block = (_THREADS // 32) * (32 // W)
        blocks, threads = -(-N // rows_per_block), _THREADS
    elif C <= _CE_WARP_MAX_C:
        blocks, threads = -(-N // _CE_WARPS_PER_BLOCK), _CE_WARPS_PER_BLOCK * 32
        smem = _CE_WARPS_PER_BLOCK * (-(-C // V) * V) * item
    else:
        packs = -(-C // V)
        block_max = _CE_BLOCK_MAX[sfx]
        threads = min(block_max, max(128, 1 << max(0, -(-packs // 4) - 1).bit_length()))
        blocks = N
        smem = packs * V * item
    if blocks > 2**31 - 1:
        raise ValueError(f"cross_entropy: N={N} rows is too many for one launch (C={C})")
    count_ptr = _NULL
    if need_count and N * blocks > _CE_INLINE_COUNT:
        _ce_finalize(x, lab, ignore_index, None, None, False, meta)
        count_ptr = meta
    common = (np.int64(ignore_index), _ptr(loss_rows), _ptr(grad), _ptr(gy), np.int32(gy_mode),
              np.int32(mean), count_ptr)  # fmt: skip
    if C <= _CE_SMALL_MAX_C:
        fn = _fn("softmax_cross_entropy", f"ce_small_{sfx}", dev)
        fn((blocks,), (threads,), (x, lab, np.int64(N), np.int32(C), np.int32(W), *common))
        return
    name = "ce_warp" if C <= _CE_WARP_MAX_C else "ce_block"
    fn = _fn("softmax_cross_entropy", f"{name}_{sfx}", dev)
    use_smem = smem <= _props(dev)[2] - _STATIC_SMEM_RESERVE
    if use_smem:
        _allow_smem(fn, (f"{name}_{sfx}", dev), smem)
    vec = C % V == 0 and _aligned(x, grad)
    fn(
        (blocks,),
        (threads,),
        (x, lab, np.int64(N), np.int64(C), *common, np.int32(use_smem), np.int32(vec)),
        shared_mem=smem if use_smem else 0,
    )


def _ce_empty_result(x, reduction: str, with_grad: bool):
    N, C = x.shape
    if reduction == "none":
        loss = cupy.zeros((N,), x.dtype)
    else:
        loss = cupy.full((), np.nan if reduction == "mean" else 0.0, x.dtype)
    return loss, (cupy.zeros((N, C), x.dtype) if with_grad else None)


def softmax_cross_entropy(
    logits: cupy.ndarray, labels: cupy.ndarray, ignore_index: int, reduction: str, with_grad: bool
) -> tuple[cupy.ndarray, cupy.ndarray | None]:
    """Loss (0-d for mean/sum, (N,) for none) and, with ``with_grad``, d(loss)/d(logits) for an
    upstream gradient of 1, written in the same pass. Labels outside [0, C) (other than
    ignore_index) raise ValueError at the next host read (deferred: ``backend.checks``)."""
    out_dtype = logits.dtype
    with logits.device:
        x, lab = _ce_inputs(logits, labels, reduction)
        N, C = x.shape
        if N == 0:
            loss, grad = _ce_empty_result(x, reduction, with_grad)
        else:
            mean = reduction == "mean"
            meta = cupy.empty(2, np.int64)
            loss_rows = _empty((N,), x.dtype)
            grad = _empty((N, C), x.dtype) if with_grad else None
            _ce_rows(x, lab, ignore_index, loss_rows, grad, None, 0, mean, meta)
            loss = loss_rows if reduction == "none" else _empty((), x.dtype)
            if reduction == "none":
                _ce_finalize(x, lab, ignore_index, None, None, False, meta)
            else:
                _ce_finalize(x, lab, ignore_index, loss_rows, loss, mean, meta)
            # No sync: the first bad row and its label are checked at the next host read
            # (backend.checks); the loss and gradient of a bad row are those of an ignored row.
            flags = cupy.concatenate([meta[1:2], lab[cupy.minimum(meta[1:2], N - 1)]])
            checks.require(flags, functools.partial(_ce_label_error, N, C, ignore_index))
        if out_dtype != x.dtype:
            loss = loss.astype(out_dtype)
            grad = None if grad is None else grad.astype(out_dtype)
    return loss, grad


def _ce_label_error(N: int, C: int, ignore_index: int, flags) -> ValueError | None:
    bad, value = int(flags[0]), int(flags[1])
    return label_error("cross_entropy", value, bad, N, C, ignore_index) if bad < N else None


def softmax_cross_entropy_backward(
    logits: cupy.ndarray,
    labels: cupy.ndarray,
    ignore_index: int,
    reduction: str,
    gy: cupy.ndarray,
) -> cupy.ndarray:
    """d(loss)/d(logits) for upstream ``gy`` (0-d for mean/sum, (N,) for none), recomputing the
    softmax. No sync: the forward already validated these labels."""
    out_dtype = logits.dtype
    with logits.device:
        x, lab = _ce_inputs(logits, labels, reduction)
        N, C = x.shape
        expect = _check_ce_gy(gy, reduction, x.shape)
        g = _contig(gy.astype(x.dtype, copy=False).reshape(expect))
        grad = _empty((N, C), x.dtype)
        if N:
            mean = reduction == "mean"
            meta = cupy.empty(2, np.int64)
            gy_mode = 2 if reduction == "none" else 1
            _ce_rows(x, lab, ignore_index, None, grad, g, gy_mode, mean, meta)
        if out_dtype != x.dtype:
            grad = grad.astype(out_dtype)
    return grad


# ---------------------------------------------------------------------------------------------
# binary cross-entropy with logits


def _bce_inputs(z, t, reduction: str, op: str):
    _check_bce_args(z, t, reduction, op)
    cd = z.dtype if z.dtype in (_F32, _F64) else _F32
    zc = _contig(z.astype(cd, copy=False))
    tc = _contig(t.astype(cd, copy=False))
    return zc, tc


def _bce_launch(zc, tc, reduction: str, loss, grad, gy, gy_mode: int, reduce: bool):
    """Launch the elementwise pass; with ``reduce`` it returns the per-block partial sums."""
    n = zc.size
    dev = zc.device.id
    sfx = _suffix(zc.dtype)
    V = 16 // zc.itemsize
    vec = _aligned(zc, tc, loss, grad, gy if gy_mode == 2 else None)
    acc = _acc_scalar(zc.dtype)
    gscale = acc(1.0 / n) if reduction == "mean" else acc(1.0)
    partials = None
    fn = _fn("bce_with_logits", f"bce_{sfx}", dev)
    if reduce:
        # grid from numel only (never the GPU model): the partial sums' order is fixed
        blocks = max(1, min(-(-(n // V) // _THREADS), _BCE_MAX_PARTIALS))
        partials = cupy.empty(blocks, np.float64)
    else:
        blocks = _grid_elementwise(fn, (f"bce_{sfx}", dev), max(1, n // V), dev)
    fn(
        (blocks,),
        (_THREADS,),
        (zc, tc, np.int64(n), _ptr(loss), _ptr(grad), _ptr(gy), np.int32(gy_mode), gscale,
         _ptr(partials), np.int32(vec)),
    )  # fmt: skip
    return partials


def bce_with_logits(
    z: cupy.ndarray, t: cupy.ndarray, reduction: str, with_grad: bool
) -> tuple[cupy.ndarray, cupy.ndarray | None]:
    out_dtype = z.dtype
    with z.device:
        zc, tc = _bce_inputs(z, t, reduction, "binary_cross_entropy_with_logits")
        n = zc.size
        grad = _empty(zc.shape, zc.dtype) if with_grad else None
        if reduction == "none":
            loss = _empty(zc.shape, zc.dtype)
            if n:
                _bce_launch(zc, tc, reduction, loss, grad, None, 0, False)
        elif n == 0:
            loss = cupy.full((), np.nan if reduction == "mean" else 0.0, zc.dtype)
        else:
            loss = _empty((), zc.dtype)
            partials = _bce_launch(zc, tc, reduction, None, grad, None, 0, True)
            _fn("bce_with_logits", f"bce_finalize_{_suffix(zc.dtype)}", zc.device.id)(
                (1,),
                (_REDUCE_THREADS,),
                (partials, np.int32(partials.size), np.int64(n), np.int32(reduction == "mean"),
                 loss),
            )  # fmt: skip
        if out_dtype != zc.dtype:
            loss = loss.astype(out_dtype)
            grad = None if grad is None else grad.astype(out_dtype)
    return loss, grad


def bce_with_logits_backward(
    z: cupy.ndarray, t: cupy.ndarray, reduction: str, gy: cupy.ndarray
) -> cupy.ndarray:
    op = "binary_cross_entropy_with_logits backward"
    out_dtype = z.dtype
    with z.device:
        zc, tc = _bce_inputs(z, t, reduction, op)
        _check_bce_gy(gy, reduction, zc.shape)
        g = _contig(gy.astype(zc.dtype, copy=False))
        grad = _empty(zc.shape, zc.dtype)
        if zc.size:
            _bce_launch(zc, tc, reduction, None, grad, g, 2 if reduction == "none" else 1, False)
        if out_dtype != zc.dtype:
            grad = grad.astype(out_dtype)
    return grad


# ---------------------------------------------------------------------------------------------
# optimizers: one launch per dtype group over a cached pointer table (fused_cuda_tables)


def _check_group(op: str, params, grads, states: list) -> None:
    """Shapes/dtypes as on the CPU, plus what in-place kernel updates need: a kernel dtype and
    C-contiguous parameters and states (grads are made contiguous on the fly)."""
    _check_group_shapes(op, params, grads, states)
    for i, p in enumerate(params):
        if _suffix(p.dtype) is None:
            raise TypeError(
                f"{op}: parameter {i} has dtype {p.dtype}; the fused kernels support float16, "
                "bfloat16, float32 and float64"
            )
        for what, a in [("parameter", p)] + [(f"state {j}", s[i]) for j, s in enumerate(states)]:
            if not a.flags.c_contiguous:
                raise ValueError(f"{op}: {what} of parameter {i} (shape {a.shape}) must be "
                                 "C-contiguous to be updated in place")  # fmt: skip


def _groups(params) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for i, p in enumerate(params):
        if p.size:
            out.setdefault(_suffix(p.dtype), []).append(i)
    return out


def sgd_step(
    params: list,
    grads: list,
    momentum_bufs: list,
    *,
    lr: float,
    momentum: float,
    dampening: float,
    nesterov: bool,
    weight_decay: float,
    first_step: bool,
) -> None:
    """One torch.optim.SGD step over all ``params`` in place: one launch per dtype group."""
    use_buf = momentum != 0
    _check_group("sgd_step", params, grads, [momentum_bufs] if use_buf else [])
    for sfx, idx in _groups(params).items():
        dev = params[idx[0]].device.id
        with cupy.cuda.Device(dev):
            ps = [params[i] for i in idx]
            bufs = [momentum_bufs[i] for i in idx] if use_buf else [None] * len(idx)
            entry = static_table("sgd_step", dev, sfx, [ps, bufs])
            gs = [_contig(grads[i]) for i in idx]
            gtab = grad_table(entry, gs, dev, "sgd_step")
            acc = _acc_scalar(ps[0].dtype)
            _fn("optimizers", f"sgd_step_{sfx}", dev)(
                (entry.nblocks,),
                (_THREADS,),
                (entry.tab, gtab, entry.sizes, entry.blocks, np.int32(CHUNK), acc(lr),
                 acc(momentum), acc(1.0 - dampening), np.int32(bool(nesterov)),
                 acc(weight_decay), np.int32(bool(first_step))),
            )  # fmt: skip


def adam_step(
    params: list,
    grads: list,
    exp_avgs: list,
    exp_avg_sqs: list,
    *,
    step: int,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    decoupled: bool,
) -> None:
    """One torch.optim.Adam (``decoupled=False``) or AdamW step over all ``params`` in place."""
    _check_group("adam_step", params, grads, [exp_avgs, exp_avg_sqs])
    step_size, bc2_sqrt = _adam_bias_terms(step, lr, beta1, beta2)
    decay = 1 - lr * weight_decay
    for sfx, idx in _groups(params).items():
        dev = params[idx[0]].device.id
        with cupy.cuda.Device(dev):
            cols = [[params[i] for i in idx], [exp_avgs[i] for i in idx],
                    [exp_avg_sqs[i] for i in idx]]  # fmt: skip
            entry = static_table("adam_step", dev, sfx, cols)
            gs = [_contig(grads[i]) for i in idx]
            gtab = grad_table(entry, gs, dev, "adam_step")
            acc = _acc_scalar(cols[0][0].dtype)
            _fn("optimizers", f"adam_step_{sfx}", dev)(
                (entry.nblocks,),
                (_THREADS,),
                (entry.tab, gtab, entry.sizes, entry.blocks, np.int32(CHUNK),
                 acc(weight_decay), acc(decay), acc(1.0 - beta1), acc(beta2), acc(1.0 - beta2),
                 acc(eps), acc(step_size), acc(bc2_sqrt), np.int32(bool(decoupled))),
            )  # fmt: skip
