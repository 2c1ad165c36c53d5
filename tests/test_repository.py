"""The repository speaks of the product: no word of how it was made in tracked text."""

import shutil
import subprocess

import pytest
from conftest import REPO

HISTORY_TALK = r"session [0-9]|lent (gpu )?machine|issue [0-9]|TOOLCHAIN\.md|\.\./shared"


def test_tracked_text_speaks_of_the_product_only():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "grep", "-niE", HISTORY_TALK, "--", ".", ":!tests"],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert found.returncode == 1, found.stdout  # 1: no match
