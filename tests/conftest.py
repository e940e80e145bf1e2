"""Fixtures shared by the test modules: seeded random streams.

Every random test draws from these, so a failure reproduces exactly.
"""

import numpy as np
import pytest
import torch

# Test tensors are tiny (a few atoms, a few thousand walkers): a second BLAS or
# intra-op thread only adds hand-off cost, which grows tenfold on a loaded
# two-core machine. One thread keeps the suite's runtime predictable.
torch.set_num_threads(1)


@pytest.fixture
def rng() -> np.random.Generator:
    """A numpy generator with a fixed seed."""
    return np.random.default_rng(20260101)


@pytest.fixture
def torch_gen() -> torch.Generator:
    """A torch CPU generator with a fixed seed."""
    return torch.Generator().manual_seed(20260101)
