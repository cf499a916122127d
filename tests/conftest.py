import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """The tests' models are tiny: on a busy 2-core machine a second intra-op thread only spins
    (seen 10-50x slower), so the whole suite runs torch on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
