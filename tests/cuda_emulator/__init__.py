"""The CUDA emulator tier (a package only so that its conftest is not confused with
tests/conftest.py). Its helper modules are imported by plain name (simt_build, simt_cupy,
_simt_cases), as the sanitizer test's subprocess does too."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
