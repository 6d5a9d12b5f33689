"""The connection-secret key of the test suite (SLUICE_SECRET_KEY), set for every test process."""

from __future__ import annotations

from shared.secret_box import SecretBox

# A fixed test-only key: stored secrets of one run stay readable by every process of the run.
TEST_SECRET_KEY = "NNSDru7roaE8_DqYWdXU38BAIhThzU0GOvpDK9WpcuU="


def suite_box() -> SecretBox:
    """The keys the suite's services seal and open connection secrets with."""
    return SecretBox.from_text(TEST_SECRET_KEY)
