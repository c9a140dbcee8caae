"""Static graphs: ``gg.compile`` traces a step once into a flat program of array calls and
replays it (see ``api``, ``tracer``, ``walk``, ``program``)."""

from .api import Compiled, compile
from .program import Program
from .tracer import CompileError

__all__ = ["CompileError", "Compiled", "Program", "compile"]
