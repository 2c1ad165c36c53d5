"""The recommended tile: candidates, and the choice between measured trials (pure functions)."""

import pytest

from export.tile_choice import TileTrial, candidates, choose_tile
from firmware_bridge.errors import EdgesegError


def test_candidates_around_the_training_tile():
    assert candidates(256) == [(256, 32), (256, 64), (384, 32), (384, 64), (512, 32), (512, 64)]
    assert candidates(64) == [(64, 8), (64, 16), (96, 8), (96, 16), (128, 8), (128, 16)]
    assert candidates(32) == [(32, 8), (64, 8)]  # overlaps of half a tile or more are dropped
    with pytest.raises(EdgesegError):
        candidates(16)


def test_choice_is_the_fastest_within_the_tolerance_of_the_best():
    trials = [TileTrial(256, 32, 0.600, 3.0), TileTrial(384, 32, 0.5995, 3.6),
              TileTrial(512, 32, 0.590, 4.1), TileTrial(512, 64, 0.602, 3.3)]
    assert choose_tile(trials) == trials[1]  # 512/32 is faster but 1.2 points below the best
    assert choose_tile(trials, tolerance=0.02) == trials[2]
    assert choose_tile(trials, tolerance=0.0) == trials[3]
    with pytest.raises(EdgesegError):
        choose_tile([])
