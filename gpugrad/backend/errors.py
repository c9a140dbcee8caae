"""Error types shared by the whole library (kept here so the backend can raise them)."""


class DeviceError(RuntimeError):
    """A device is unavailable, or tensors on different devices met in one op."""
