"""Parameter initialisation as PyTorch's defaults, from one seeded generator.

`timenet.manual_seed(s)` makes every model built afterwards reproducible.
"""
import math

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed):
    global _rng
    _rng = np.random.default_rng(int(seed))


def generator():
    return _rng


def uniform(shape, bound):
    return _rng.uniform(-bound, bound, size=shape).astype(np.float32)


def kaiming_uniform(shape, fan_in, a=math.sqrt(5)):
    """PyTorch's default for Conv2d/Linear weights: kaiming_uniform_(a=sqrt(5)),
    i.e. U(-b, b) with b = gain * sqrt(3 / fan_in), gain = sqrt(2 / (1 + a^2))."""
    gain = math.sqrt(2.0 / (1 + a * a))
    return uniform(shape, gain * math.sqrt(3.0 / fan_in))


def normal(shape, std=1.0):
    return (_rng.standard_normal(size=shape) * std).astype(np.float32)


def zeros(shape):
    return np.zeros(shape, np.float32)
