"""What CI runs (`pytest tests/`): the numbers the app shows."""

from pathlib import Path

import pandas as pd

import analysis

RECIPES = pd.read_csv(Path(__file__).resolve().parent.parent / "sample" / "recipes.csv")


def test_average_rating():
    assert analysis.average_rating(RECIPES) == 4.5


def test_by_cuisine():
    assert analysis.by_cuisine(RECIPES).to_dict() == {"French": 3, "Italian": 2, "Spanish": 3}
