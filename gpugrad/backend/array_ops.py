"""``ArrayOps``: the namespace derivative rules use in array mode (raw arrays, no Tensors).

It mirrors the few functions of ``gpugrad.ops`` that rules call by name, so one rule serves both
array mode and graph mode (``create_graph=True``). Everything else rules need is an operator or a
method that NumPy arrays, CuPy arrays and Tensors share (``+ * / @ .sum .reshape .astype``).
"""

from __future__ import annotations

from .config import fused_ops


class ArrayOps:
    def __init__(self, backend) -> None:
        xp = backend.xp
        self.backend = backend
        self.xp = xp
        self.exp = xp.exp
        self.log = xp.log
        self.sqrt = xp.sqrt
        self.sin = xp.sin
        self.cos = xp.cos
        self.tanh = xp.tanh
        self.sign = xp.sign
        self.where = xp.where
        self.erf = backend.erf
        self.cumsum = xp.cumsum
        self.flip = xp.flip

    def broadcast_to(self, g, shape):
        # A materialised copy: faster than np.broadcast_to for small arrays, and gradients that
        # reach leaves or fused kernels must be contiguous anyway.
        out = self.xp.empty(shape, dtype=g.dtype)
        out[...] = g
        return out

    def sigmoid(self, x):
        """``sigmoid(x)`` on arrays, as ``gg.sigmoid`` computes it (kernel or reference)."""
        return fused_ops(self.backend).sigmoid_forward(x)

    def sigmoid_grad(self, y, g):
        return fused_ops(self.backend).sigmoid_backward(y, g)

    def unindex(self, g, index, shape, accumulate: bool):
        """The gradient of ``x[index]``: zeros of ``shape`` with ``g`` added at ``index``."""
        out = self.xp.zeros(shape, dtype=g.dtype)
        if accumulate:  # integer-array indices may repeat: scatter-add, never overwrite
            self.backend.scatter_add(out, index, g)
        else:
            out[index] = g
        return out

    def mask_select(self, mask, g):
        """``where(mask, g, 0)``: exactly 0 where the mask is off, even where ``g`` is inf or NaN
        (``g * mask`` would give NaN there). The NumPy backend overrides it with a faster form."""
        return self.xp.where(mask, g, 0)

    def to_device(self, array, device):
        return device.put(array)
