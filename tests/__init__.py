"""The test suite; its shared checks are rewritten by pytest so a failed assert shows its values."""

import pytest

pytest.register_assert_rewrite("tests.run_checks")
