"""The repository speaks of the product: no word of how it was made in tracked text."""

import shutil
import subprocess

import pytest
from conftest import REPO

HISTORY_TALK = r"session [0-9]|lent (gpu )?machine|issue [0-9]|TOOLCHAIN\.md|\.\./shared"
# experiment narration belongs in docs/benchmarks.md (and the README's headline table of it)
NARRATION = (r"target[^.]{0,40}not met|when this page was written|old default|\bon dubai\b|"
             r"dubai'?s tile|(issue|ticket): ")


def test_product_text_does_not_narrate_experiments():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "grep", "-niE", NARRATION, "--", "*.py", "*.md",
                            ":!tests", ":!docs/benchmarks.md", ":!benchmarks"],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert found.returncode == 1, found.stdout  # 1: no match


def test_tracked_text_speaks_of_the_product_only():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "grep", "-niE", HISTORY_TALK, "--", ".", ":!tests"],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert found.returncode == 1, found.stdout  # 1: no match
