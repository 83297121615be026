import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread: the models here are tiny, and on a shared 2-core machine (or
    under ``pytest -n 2``) two threads per process oversubscribe the cores and run the
    GRU several times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
