"""gpugrad: GPU-accelerated reverse-mode autograd on CuPy (CUDA) and NumPy (CPU)."""

from __future__ import annotations

import numpy as _np

from . import autograd, cuda
from .autograd import Function, enable_grad, grad, is_grad_enabled, no_grad
from .backend import Device, DeviceError, fused_enabled, set_fused
from .backend import device as device
from .creation import (
    arange,
    empty,
    from_dlpack,
    from_numpy,
    full,
    full_like,
    linspace,
    manual_seed,
    ones,
    ones_like,
    rand,
    randint,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from .explain import explain, render_dot, to_dot
from .gradcheck import GradcheckError, gradcheck
from .ops import (
    abs,
    argmax,
    argmin,
    astype,
    broadcast_to,
    cat,
    chunk,
    clip,
    clone,
    concat,
    concatenate,
    cos,
    cumsum,
    elu,
    erf,
    exp,
    expand_dims,
    expm1,
    flatten,
    flip,
    gather,
    gelu,
    isfinite,
    leaky_relu,
    linear,
    log,
    log1p,
    log_softmax,
    logaddexp,
    logsumexp,
    matmul,
    max,
    maximum,
    mean,
    min,
    minimum,
    norm,
    pad,
    permute,
    prod,
    reciprocal,
    relu,
    repeat,
    repeat_interleave,
    reshape,
    sigmoid,
    sign,
    silu,
    sin,
    softmax,
    softplus,
    split,
    sqrt,
    square,
    squeeze,
    stack,
    std,
    sum,
    swapaxes,
    take_along_axis,
    tanh,
    tile,
    transpose,
    unsqueeze,
    var,
    where,
)
from .ops.tensor_methods import setup_tensor as _setup_tensor
from .tensor import Tensor

_setup_tensor()  # operators and op methods onto Tensor, graph-mode ops into the engine

__version__ = "0.1.0"

float16 = _np.dtype("float16")
float32 = _np.dtype("float32")
float64 = _np.dtype("float64")
int32 = _np.dtype("int32")
int64 = _np.dtype("int64")
bool_ = _np.dtype("bool")

from . import data, distributed, functional, nn, optim, parity  # noqa: E402
from .compile import CompileError, compile  # noqa: E402,A004
from .serialization import load, save  # noqa: E402

utils = parity  # its former name: gg.utils.parity still works
