"""What the subcommands share: the user-facing error and device parsing."""

from __future__ import annotations

from typing import Any


class CliError(Exception):
    """A user-facing error: printed as ``gpugrad: error: ...`` with exit status 2."""


def parse_device(spec: str) -> Any:
    import gpugrad as gg

    try:
        return gg.device(spec)
    except (ValueError, gg.DeviceError) as exc:
        raise CliError(str(exc)) from None
