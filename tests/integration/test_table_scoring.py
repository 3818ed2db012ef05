"""Scoring typed rows read by Spark's own reader: each row gets a score or a reason (never both,
never neither), and a label column rides along."""

import pyarrow as pa
import pytest
import torch

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.config import PipelineConfig
from gen_pipeline.kinds.table.schema import Column, TableSchema
from gen_pipeline.kinds.table.scoring import score_table
from gen_pipeline.kinds.table.sources import read_table
from gen_pipeline.kinds.table.transforms import TableTransformer
from gen_pipeline.models import build_model

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCHEMA = TableSchema(columns=(Column("age", "continuous", "int"), Column("sex", "categorical", "string"),
                              Column("anomaly", "label", "int")), missing_token="", comment_prefix="")


def _bundle() -> ModelBundle:
    spec = {"version": 2, "schema": SCHEMA.to_dict(), "fitted_rows": 100, "columns": [
        {"name": "age", "kind": "continuous", "dtype": "int", "method": "standard", "min": 17.0, "max": 90.0,
         "mean": 40.0, "std": 10.0, "has_nulls": False},
        {"name": "sex", "kind": "categorical", "dtype": "string", "categories": ["Male", "Female"],
         "frequencies": [0.6, 0.4]}]}
    cfg = PipelineConfig(name="t", model_name="t", model={"family": "tvae", "latent_dim": 2, "hidden_dims": [8]})
    t = TableTransformer(spec)
    torch.manual_seed(0)
    return ModelBundle(cfg, spec, build_model(cfg.model, t.spans, t.output_dim).state_dict())


def test_score_table_gives_each_row_a_score_or_a_reason(spark, tmp_path):
    texts = ["39,Male,0", "50,Female,1", "x,Male,0", "41,Alien,0", "1,2", "", "77,Female,1"]
    (tmp_path / "f.csv").write_text("\n".join(texts) + "\n")
    records, _ = read_table(spark, [tmp_path / "f.csv"], SCHEMA)  # Spark's CSV reader + the validation pass
    typed = pa.Table.from_batches(records.orderBy("line")._collect_as_arrow())
    out = score_table(_bundle(), typed, SCHEMA).to_pandas()
    assert out["line"].tolist() == [1, 2, 3, 4, 5, 7]  # the blank line is not data
    assert list(out.columns) == ["source", "line", "age", "sex", "anomaly", "score", "reason"]
    scored = out["score"].notna()
    assert (scored ^ out["reason"].notna()).all()  # exactly one of the two per row
    assert scored.tolist() == [True, True, False, False, False, True]
    reasons = out["reason"].tolist()
    assert "'x' is not a number" in reasons[2] and "unseen category 'Alien'" in reasons[3]
    assert "expected 3 fields" in reasons[4]
    assert out.loc[scored, "anomaly"].tolist() == [0, 1, 1]  # the label rides along, not modelled


def test_a_user_table_scores_its_held_out_test_split_by_default(spark, tmp_path):
    from gen_pipeline.errors import PipelineError
    from gen_pipeline.kinds.table import TABLE
    from gen_pipeline.layout import PreprocessOutput, RunLayout

    cfg = PipelineConfig(name="mine", model_name="mine", data={"source": str(tmp_path / "mine.csv")})
    with pytest.raises(PipelineError, match="no test split of mine to score; run `gen-pipeline preprocess` first, "
                                            "or pass --input FILE"):
        TABLE.score_records(spark, cfg, None, None, _bundle(), work_dir=tmp_path)
    test = PreprocessOutput(RunLayout(tmp_path, "mine").preprocess).clean("test")
    rows = [(39, "Male", 0), (50, "Female", 1), (77, "Female", 1)]
    spark.createDataFrame(rows, SCHEMA.spark_ddl()).write.parquet(str(test))  # as preprocess writes clean/test
    job = TABLE.score_records(spark, cfg, None, None, _bundle(), work_dir=tmp_path)
    assert job.inputs == [str(test)]
    out = score_table(_bundle(), pa.Table.from_batches(job.frame._collect_as_arrow()), SCHEMA).to_pandas()
    assert sorted(zip(out["age"], out["sex"], out["anomaly"])) == sorted(rows)  # every held-out row, typed
    assert out["score"].notna().all() and out["reason"].isna().all()
    assert out["source"].str.endswith(".parquet").all()
