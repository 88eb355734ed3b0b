from pathlib import Path

import pandas as pd

import analysis

RECIPES = pd.read_csv(Path(__file__).resolve().parent.parent / "sample" / "recipes.csv")


def test_by_season_in_calendar_order():
    assert list(analysis.by_season(RECIPES).items()) == [("spring", 1), ("summer", 2), ("autumn", 3), ("winter", 2)]
