"""Reusable layers built on the public ops."""

from ._dropout import ConcreteDropout, concrete_dropout_regularization, mc_predict, mc_samples
from ._gates import ConcreteGate, ConcreteSelector, HardConcreteGate
from ._kmeans import SoftKMeans, SoftKMeansOutput
from ._mixed import MixedOp, architecture_parameters, weight_parameters
from ._softmax import GumbelSoftmax
from ._subset import SubsetSelector

__all__ = [
    "ConcreteDropout",
    "ConcreteGate",
    "ConcreteSelector",
    "GumbelSoftmax",
    "HardConcreteGate",
    "MixedOp",
    "SoftKMeans",
    "SoftKMeansOutput",
    "SubsetSelector",
    "architecture_parameters",
    "concrete_dropout_regularization",
    "mc_predict",
    "mc_samples",
    "weight_parameters",
]
