"""Adult's files read by Spark's own CSV reader with the committed schema file: types, missing
values, the test file's quirks, and a reason naming the column for every bad line."""

import pytest

from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA
from gen_pipeline.kinds.table.schema import REASON
from gen_pipeline.kinds.table.sources import read_table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read(spark, tmp_path, lines, name="adult.data"):
    (tmp_path / name).write_text("\n".join(lines) + "\n")
    records, _ = read_table(spark, [tmp_path / name], ADULT_SCHEMA)
    return records.orderBy("line").toPandas()


def test_real_adult_lines_parse_with_types_and_missing(spark, tmp_path, adult_lines):
    lines = adult_lines[:2000]
    out = _read(spark, tmp_path, lines)
    assert len(out) == 2000 and out[REASON].isna().all()
    assert str(out["age"].dtype) in ("int64", "Int64") and out["age"].min() >= 17
    assert out.loc[0, "workclass"] == "State-gov" and out.loc[0, "income"] == "<=50K"
    # '?' is a missing value, never a category named '?'
    assert "?" not in set(out["occupation"].dropna()) and out["occupation"].isna().any()


def test_test_file_quirks(spark, tmp_path, adult_dir):
    raw = (adult_dir / "adult.test").read_text().splitlines()
    out = _read(spark, tmp_path, raw[:50] + ["", "   "], "adult.test")
    assert len(out) == 49 and out["line"].iloc[0] == 2  # "|1x3 Cross validator" and blanks are not rows
    assert set(out["income"]) <= {"<=50K", ">50K"}  # the trailing '.' is stripped


def test_bad_lines_get_reasons_naming_the_column(spark, tmp_path):
    good = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 2174, 0, 40, United-States, <=50K"
    lines = [
        good,
        "39, State-gov, 77516",
        good.replace("39,", "abc,", 1),
        good.replace(", 40,", ", inf,"),
        good.replace(", 40,", ", nan,"),
        good.replace("39,", "39.5,", 1),
    ]
    out = _read(spark, tmp_path, lines)
    reasons = out[REASON].tolist()
    assert reasons[0] is None
    assert "expected 15 fields" in reasons[1] and "got 3" in reasons[1]
    assert "column age" in reasons[2] and "not a number" in reasons[2]
    assert "column hours_per_week" in reasons[3] and "not finite" in reasons[3]
    assert "column hours_per_week" in reasons[4] and "not finite" in reasons[4]
    assert "column age" in reasons[5] and "not an integer" in reasons[5]
