from pathlib import Path

import pandas as pd

import analysis

RECIPES = pd.read_csv(Path(__file__).resolve().parent.parent / "sample" / "recipes.csv")


def test_quick_includes_thirty_minutes():
    assert analysis.quick(RECIPES).to_dict() == {"Spanish": 2}
