"""The catalogue of classic mistakes that :mod:`cnnbp_ref.check` verifies its hints against."""

from __future__ import annotations

CONV2D: list = []
CONV_TRANSPOSE2D: list = []
MAX_POOL2D: list = []
AVG_POOL2D: list = []
LINEAR: list = []
CROSS_ENTROPY: list = []
RELU: list = []
LEAKY_RELU: list = []
SIGMOID: list = []
TANH: list = []
