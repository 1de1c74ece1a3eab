import pytest
import torch


@pytest.fixture
def one_thread():
    """Runs a test with one torch thread: tiny models gain nothing from a second one, a busy 2-core machine makes two
    much slower, and subprocesses started with OMP_NUM_THREADS=1 then compute bitwise-equal results."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
