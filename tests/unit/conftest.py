"""Unit tests run with one torch intra-op thread.

Their tensors are tiny: a second thread buys nothing, and on a shared 2-core machine two spinning
OpenMP threads per process thrash (the translation overfit test took 320 s with two threads under
load, 18 s with one). Recipes called with ``--threads N`` still set their own; the per-test fixture
puts one thread back before every test, so no test inherits another's setting.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread_for_module_fixtures() -> Iterator[None]:
    """Covers module-scoped fixtures too (they are set up before function-scoped ones)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)
