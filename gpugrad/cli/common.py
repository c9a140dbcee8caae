"""What the subcommands share: the user-facing error, device parsing and output-path checks."""

from __future__ import annotations

import os
from typing import Any


class CliError(Exception):
    """A user-facing error: printed as ``gpugrad: error: ...`` with exit status 2."""


def parse_device(spec: str) -> Any:
    import gpugrad as gg

    try:
        return gg.device(spec)
    except (ValueError, gg.DeviceError) as exc:
        raise CliError(str(exc)) from None


def check_output_path(flag: str, path: str) -> None:
    """Refuse, before any work starts, an output path that cannot be written: a folder, a path
    in a missing or unwritable folder, or an existing file that cannot be replaced."""
    target = os.path.realpath(path)  # gg.save and open() write through symlinks
    if os.path.isdir(target):
        raise CliError(f"{flag} {path}: is a folder; give a file name")
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise CliError(f"{flag} {path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CliError(f"{flag} {path}: the folder {folder} is not writable")
    if os.path.exists(target):
        if not os.path.isfile(target):
            raise CliError(f"{flag} {path}: exists and is not a regular file")
        if not os.access(target, os.W_OK):
            raise CliError(f"{flag} {path}: the file is not writable")
