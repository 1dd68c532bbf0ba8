"""Model tests run on one CPU thread.

The tensors here are tiny, so a second thread buys little, and when the machine's cores are
shared with other jobs OpenMP threads spin-waiting on each other can slow a test tenfold.
Two fixtures: the module-scoped one is in place before module-scoped data fixtures are built;
the function-scoped one runs after the test-wide conftest's per-test settings.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread_module():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread(_one_thread_module):
    torch.set_num_threads(1)
