"""Shared test configuration.

Under ``CI=true`` Hypothesis loads its built-in ``ci`` profile by itself (derandomized, no deadline,
no example database), so property tests are reproducible in CI. Locally we register a ``dev``
profile with no deadline (first torch calls are slow) and select it unless CI is set.
"""
import os

import pytest
from hypothesis import settings

settings.register_profile("dev", deadline=None, print_blob=True)
if not os.environ.get("CI"):
    settings.load_profile("dev")

# The suite works on tiny tensors: torch's intra-op threads only add synchronisation overhead, and on a
# loaded 2-core machine they made the Monte Carlo tests several times slower.
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny offline tokenizer of ``llm_experiments.testing``, built once per test module."""
    pytest.importorskip("transformers")
    from llm_experiments.testing import tiny_tokenizer

    return tiny_tokenizer()


@pytest.fixture(scope="module")
def tok(tokenizer):
    """The same tokenizer under the short name the training tests use."""
    return tokenizer
