"""What Kitchen Insights computes, as plain functions CI can test."""

from dataclasses import dataclass
from typing import Callable

import pandas as pd

SEASONS = ["spring", "summer", "autumn", "winter"]


@dataclass
class Section:
    title: str
    compute: Callable[[pd.DataFrame], pd.Series]


def average_rating(recipes: pd.DataFrame) -> float:
    """Mean rating, rounded to one decimal."""
    return round(float(recipes["rating"].mean()), 1)


def by_cuisine(recipes: pd.DataFrame) -> pd.Series:
    """Number of recipes per cuisine."""
    return recipes.groupby("cuisine")["name"].count()


def by_season(recipes: pd.DataFrame) -> pd.Series:
    """Number of recipes per season, in calendar order."""
    return recipes.groupby("season")["name"].count().reindex(SEASONS, fill_value=0)


def quick(recipes: pd.DataFrame) -> pd.Series:
    """Recipes ready in half an hour or less, per cuisine."""
    return recipes[recipes["minutes"] <= 30].groupby("cuisine")["name"].count()


SECTIONS = [
    Section("Recipes by cuisine", by_cuisine),
    Section("Recipes by season", by_season),
    Section("Ready in 30 minutes", quick),
]
