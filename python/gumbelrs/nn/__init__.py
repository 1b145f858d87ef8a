"""Reusable layers built on the public ops."""

from ._dropout import ConcreteDropout, concrete_dropout_regularization, mc_predict, mc_samples
from ._kmeans import SoftKMeans, SoftKMeansOutput
from ._softmax import GumbelSoftmax

__all__ = [
    "ConcreteDropout",
    "GumbelSoftmax",
    "SoftKMeans",
    "SoftKMeansOutput",
    "concrete_dropout_regularization",
    "mc_predict",
    "mc_samples",
]
