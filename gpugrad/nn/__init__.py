"""Neural-network building blocks, like ``torch.nn``: ``Module``, ``Parameter``, layers, containers,
``MLP``, loss modules, and ``nn.init``. ``nn.functional`` is ``gpugrad.functional``."""

from .. import functional
from . import init
from .layers import (
    ACTIVATIONS,
    GELU,
    MLP,
    BCELoss,
    BCEWithLogitsLoss,
    CrossEntropyLoss,
    Flatten,
    Identity,
    LeakyReLU,
    Linear,
    LogSoftmax,
    ModuleList,
    MSELoss,
    NLLLoss,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
)
from .module import IncompatibleKeys, Module, Parameter

__all__ = [
    "ACTIVATIONS",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "Flatten",
    "GELU",
    "Identity",
    "IncompatibleKeys",
    "LeakyReLU",
    "Linear",
    "LogSoftmax",
    "MLP",
    "MSELoss",
    "Module",
    "ModuleList",
    "NLLLoss",
    "Parameter",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Softmax",
    "Tanh",
    "functional",
    "init",
]
