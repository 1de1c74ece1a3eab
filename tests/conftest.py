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


def pytest_terminal_summary(terminalreporter):
    """After a run that fuzzed (make fuzz), how many inputs each parser saw."""
    import sys

    fuzz = sys.modules.get("test_fuzz") or sys.modules.get("tests.test_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if counts:
        terminalreporter.write_line("fuzz inputs tried: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
                                    + f"; total {sum(counts.values())}")
