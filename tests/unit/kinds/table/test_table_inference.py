"""The inference rules (gen_pipeline.kinds.table.inference) on pandas samples, and the schema file round trip."""

from decimal import Decimal

import pandas as pd
import pytest

from gen_pipeline.kinds.table.datasets import ADULT_SCHEMA, SCHEMAS_DIR, SHUTTLE_SCHEMA
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.inference import apply_overrides, check_declared, format_table, infer_column, infer_schema
from gen_pipeline.kinds.table.schema import Column, TableSchema


def _kind(values, spark_type="string"):
    col, why = infer_column("c", pd.Series(values, dtype=object), spark_type)
    assert why
    return col.kind, col.dtype


@pytest.mark.parametrize("values, spark_type, expected", [
    ([None, None, ""], "string", ("constant", "string")),          # all missing
    (["x"] * 30, "string", ("constant", "string")),
    (["true", "False", "TRUE", None], "string", ("boolean", "bool")),
    ([True, False], "boolean", ("boolean", "bool")),
    ([str(i % 5) for i in range(100)], "string", ("categorical", "int")),  # few distinct integers
    ([str(i) for i in range(100)], "string", ("identifier", "int")),       # unique integers
    ([str(i * 7 % 50) for i in range(100)], "string", ("continuous", "int")),
    (["1.5", "2", "-3e2", "0.25"], "string", ("continuous", "float")),
    ([1.5, 2.0, 3.25], "double", ("continuous", "float")),
    ([i % 30 for i in range(100)], "bigint", ("continuous", "int")),
    (["2024-01-02 10:00:00", "2024-01-03T11:30"], "string", ("datetime", "timestamp")),
    (["2013-01-01T10:00:00Z", "2013-01-01 11:00:00+02:00", "2013-01-02T05:00-0500"], "string",
     ("datetime", "timestamp_ltz")),  # a zone offset: instants
    (["2013"] * 30, "string", ("constant", "int")),  # a constant number in a text file stays a number
    (["2024-01-02", "2023-12-31"], "string", ("date", "date")),
    (["31/12/2023", "01/02/2024"], "string", ("date", "date")),
    ([pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")], "timestamp", ("datetime", "timestamp_ltz")),  # instant
    ([pd.Timestamp("2024-01-01"), pd.Timestamp("2024-02-01")], "timestamp_ntz", ("datetime", "timestamp")),
    ([Decimal("1.25"), Decimal("20.50"), Decimal("3.10")], "decimal(10,2)", ("continuous", "decimal(10,2)")),
    ([Decimal(i * 7 % 50) for i in range(100)], "decimal(12,0)", ("continuous", "decimal(12,0)")),
    ([Decimal(i % 4) for i in range(100)], "decimal(12,0)", ("categorical", "decimal(12,0)")),  # categories, decimals
    ([Decimal(i) for i in range(100)], "decimal(12,0)", ("identifier", "decimal(12,0)")),
    ([Decimal("9.99")] * 30, "decimal(5,2)", ("constant", "decimal(5,2)")),  # a constant keeps its type
    ([pd.Timestamp("2024-01-01")] * 30, "timestamp", ("constant", "timestamp_ltz")),
    ([None] * 30, "double", ("constant", "float")),  # an all-null typed column too
    ([f"C{i:05d}" for i in range(50)], "string", ("identifier", "string")),
    ([f"a fairly long sentence number {i} with words" for i in range(50)], "string", ("text", "string")),
    (["red", "green", "blue", "red"] * 10, "string", ("categorical", "string")),
    ([f"city{i % 900}" for i in range(1000)], "string", ("categorical", "string")),  # high cardinality
])
def test_inference_rules(values, spark_type, expected):
    assert _kind(values, spark_type) == expected


def test_date_formats_are_spark_patterns_and_missing_markers_are_found():
    col, _ = infer_column("d", pd.Series(["31/12/2023", "01/02/2024"]))
    assert col.format == "dd/MM/yyyy"
    sample = pd.DataFrame({"a": ["1", "NA", "3", "4"], "b": ["x", "y", "NA", "x"]})
    schema, why = infer_schema(sample, {"a": "string", "b": "string"}, {"separator": ";", "header": True})
    assert schema.missing_token == "NA" and schema.separator == ";"
    assert [(c.kind, c.dtype) for c in schema.columns] == [("categorical", "int"), ("categorical", "string")]
    assert format_table(schema, why).splitlines()[1].split()[:3] == ["a", "categorical", "int"]


def test_declared_kinds_that_contradict_the_data_fail_with_column_declared_and_found():
    words = pd.Series(["a1", "b2", "c3"])
    msg = check_declared(Column("zip", "continuous", "float"), words)
    assert msg.startswith("column zip: declared continuous (float) but the data has non-numbers such as 'a1'")
    assert "looks categorical" in msg or "looks identifier" in msg
    assert "repeated values such as 'x'" in check_declared(Column("id", "identifier", "string"), pd.Series(["x", "x"]))
    assert check_declared(Column("zip", "categorical", "int"), pd.Series(["1", "2"])) is None
    assert "declared boolean" in check_declared(Column("f", "boolean", "bool"), pd.Series(["maybe", "no"]))
    schema = TableSchema(columns=(Column("zip", "continuous", "int"), Column("city", "categorical", "string")))
    sample = pd.DataFrame({"zip": ["1", "2", "3"], "city": ["a", "b", "c"]})
    types = {"zip": "string", "city": "string"}
    out = apply_overrides(schema, {"zip": "categorical", "city": "identifier"}, sample, types)
    assert [(c.kind, c.dtype) for c in out.columns] == [("categorical", "int"), ("identifier", "string")]
    with pytest.raises(PipelineError, match="column city: declared continuous"):
        apply_overrides(schema, {"city": "continuous"}, sample, types)
    with pytest.raises(PipelineError, match="data.columns.nope: no such column"):
        apply_overrides(schema, {"nope": "categorical"})


def test_bundled_schema_files_round_trip_and_bad_files_are_one_line(tmp_path):
    for name, schema in (("adult", ADULT_SCHEMA), ("shuttle", SHUTTLE_SCHEMA)):
        assert TableSchema.from_yaml(SCHEMAS_DIR / f"{name}.yaml") == schema
        (tmp_path / f"{name}.yaml").write_text(schema.to_yaml("a title"))
        assert TableSchema.from_yaml(tmp_path / f"{name}.yaml") == schema
    assert ADULT_SCHEMA.strip_suffix == "." and ADULT_SCHEMA.missing_token == "?" and SHUTTLE_SCHEMA.header
    (tmp_path / "bad.yaml").write_text("columns:\n  - {name: a, kind: wobbly, dtype: int}\n")
    with pytest.raises(PipelineError, match="bad.yaml: column a: unknown kind 'wobbly'"):
        TableSchema.from_yaml(tmp_path / "bad.yaml")
    (tmp_path / "dt.yaml").write_text("columns:\n  - {name: a, kind: datetime, dtype: int}\n")
    with pytest.raises(PipelineError, match="kind datetime needs dtype timestamp"):
        TableSchema.from_yaml(tmp_path / "dt.yaml")


def test_decimal_and_time_zone_dtypes_in_the_schema_file_and_in_spark_and_arrow(tmp_path):
    import pyarrow as pa

    schema = TableSchema(columns=(Column("amount", "continuous", "decimal(12,2)"),
                                  Column("at", "datetime", "timestamp_ltz"), Column("local", "datetime", "timestamp"),
                                  Column("fee", "constant", "decimal(5,3)")))
    (tmp_path / "s.yaml").write_text(schema.to_yaml("types"))
    assert TableSchema.from_yaml(tmp_path / "s.yaml") == schema
    assert schema.spark_ddl() == ("`amount` decimal(12,2), `at` timestamp, `local` timestamp_ntz, "
                                  "`fee` decimal(5,3)")
    assert schema.arrow_schema() == pa.schema([("amount", pa.decimal128(12, 2)), ("at", pa.timestamp("us", "UTC")),
                                               ("local", pa.timestamp("us")), ("fee", pa.decimal128(5, 3))])
    for dtype, message in (("decimal(40,2)", "precision <= 38"), ("decimal(3,5)", "scale <= precision"),
                           ("decimal(x)", "unknown dtype")):
        (tmp_path / "d.yaml").write_text(f"columns:\n  - {{name: a, kind: continuous, dtype: '{dtype}'}}\n")
        with pytest.raises(PipelineError, match=message):
            TableSchema.from_yaml(tmp_path / "d.yaml")
    (tmp_path / "c.yaml").write_text("columns:\n  - {name: a, kind: boolean, dtype: 'decimal(5,2)'}\n")
    with pytest.raises(PipelineError, match="kind boolean needs dtype"):
        TableSchema.from_yaml(tmp_path / "c.yaml")
    out = apply_overrides(schema, {"amount": "categorical", "at": "datetime"})
    assert [c.dtype for c in out.columns][:2] == ["decimal(12,2)", "timestamp_ltz"]  # decimal categories; the zone kept
