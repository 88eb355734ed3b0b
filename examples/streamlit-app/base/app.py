"""Kitchen Insights: a small Streamlit app over a recipe sample.

Run it with `streamlit run app.py`; `bin/restart` does that detached, for the deploy host.
What it computes lives in `analysis.py`, which CI tests (`pytest tests/`).
"""

from pathlib import Path

import pandas as pd
import streamlit as st

import analysis

ROOT = Path(__file__).resolve().parent
DATA = ROOT / "data"  # what users write; not in git, archived before production deploys

st.set_page_config(page_title="Kitchen Insights", page_icon="🍳")
st.title("Kitchen Insights")
st.caption((ROOT / "static" / "about.txt").read_text().strip())

recipes = pd.read_csv(ROOT / "sample" / "recipes.csv")
st.metric("Recipes", len(recipes))
st.metric("Average rating", analysis.average_rating(recipes))
st.dataframe(recipes)

for section in analysis.SECTIONS:
    st.subheader(section.title)
    st.bar_chart(section.compute(recipes))

with st.form("feedback"):
    note = st.text_input("What should we analyse next?")
    if st.form_submit_button("Send") and note:
        DATA.mkdir(exist_ok=True)
        with open(DATA / "feedback.csv", "a", encoding="utf-8") as f:
            f.write(note.replace("\n", " ") + "\n")
        st.success("Thanks!")
