import pandas as pd

from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA
from gen_pipeline.kinds.table.schema import REASON, parse_lines


def _frame(lines):
    return pd.DataFrame({"source": "f", "line": range(1, len(lines) + 1), "text": lines})


def test_real_adult_lines_parse_with_types_and_missing(adult_lines):
    lines = adult_lines[:2000]
    out = parse_lines(_frame(lines), ADULT_SCHEMA)
    assert len(out) == 2000 and out[REASON].isna().all()
    assert out["age"].dtype == "Int64" and out["age"].min() >= 17
    assert out.loc[0, "workclass"] == "State-gov" and out.loc[0, "income"] == "<=50K"
    # '?' is a missing value, never a category named '?'
    assert "?" not in set(out["occupation"].dropna()) and out["occupation"].isna().any()


def test_test_file_quirks(adult_dir):
    raw = (adult_dir / "adult.test").read_text().splitlines()
    out = parse_lines(_frame(raw[:50] + ["", "   "]), ADULT_SCHEMA)
    assert len(out) == 49 and out["line"].iloc[0] == 2  # "|1x3 Cross validator" and blanks are not rows
    assert set(out["income"]) <= {"<=50K", ">50K"}  # the trailing '.' is stripped


def test_bad_lines_get_reasons_naming_the_column():
    good = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K"
    lines = [
        good,
        "39, State-gov, 77516",
        good.replace("39,", "abc,", 1),
        good.replace(", 40,", ", inf,"),
        good.replace(", 40,", ", nan,"),
        good.replace("39,", "39.5,", 1),
    ]
    out = parse_lines(_frame(lines), ADULT_SCHEMA)
    reasons = out[REASON].tolist()
    assert reasons[0] is None
    assert "expected 15 fields" in reasons[1] and "got 3" in reasons[1]
    assert "column age" in reasons[2] and "not a number" in reasons[2]
    assert "column hours_per_week" in reasons[3] and "not finite" in reasons[3]
    assert "column hours_per_week" in reasons[4] and "not finite" in reasons[4]
    assert "column age" in reasons[5] and "not an integer" in reasons[5]
