"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny-tensor tests on one thread: on a busy 2-core machine, small ops with
    two threads are 10-100x slower from synchronisation alone."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
