"""Neural-network building blocks, like ``torch.nn``: ``Module``, ``Parameter``, layers, containers,
``MLP``, loss modules, and ``nn.init``. ``nn.functional`` is ``gpugrad.functional``."""

from .. import functional
from . import init, utils
from .activation import (
    ACTIVATIONS,
    ELU,
    GELU,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .embedding import Embedding
from .layers import MLP, Dropout, Flatten, Linear, ModuleList, Sequential
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import IncompatibleKeys, Module, Parameter
from .normalization import BatchNorm1d, LayerNorm

__all__ = [
    "ACTIVATIONS",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BatchNorm1d",
    "CrossEntropyLoss",
    "Dropout",
    "ELU",
    "Embedding",
    "Flatten",
    "GELU",
    "Identity",
    "IncompatibleKeys",
    "LayerNorm",
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
    "SiLU",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Tanh",
    "functional",
    "init",
    "utils",
]
