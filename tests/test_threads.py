"""sorl_torchrl._threads: the default thread count and applying it."""

import pytest
import torch

from sorl_torchrl._threads import configure_threads, default_threads


@pytest.fixture(autouse=True)
def _no_thread_variable(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu"), "cuda", "cuda:1"])
def test_default_is_one_thread(device):
    assert default_threads(device) == 1


def test_default_follows_omp_num_threads_on_the_cpu(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert default_threads("cpu") == 3
    assert default_threads("cuda") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert default_threads("cpu") == 1


def test_configure_threads_sets_torch(restore_threads):
    torch.set_num_threads(2)
    assert configure_threads(None, "cpu") == 1
    assert torch.get_num_threads() == 1
    assert configure_threads(2) == 2
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2"])
def test_configure_threads_refuses_bad_counts(bad, restore_threads):
    with pytest.raises(ValueError, match="threads must be None"):
        configure_threads(bad)
