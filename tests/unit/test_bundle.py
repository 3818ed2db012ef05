"""Conditional generation through a bundle: only matching rows, the rest of the joint kept, clear
errors for a bad column or value, reproducible from a seed."""

import numpy as np
import pandas as pd
import pytest
import torch

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.kinds.table.schema import Column, TableSchema
from gen_pipeline.kinds.table.fitting import fit_vgm
from gen_pipeline.kinds.table.transforms import TableTransformer

SCHEMA = TableSchema(columns=(Column("age", "continuous", "int"), Column("sex", "categorical", "string"),
                              Column("job", "categorical", "string")))


def _spec():
    rng = np.random.default_rng(0)
    age = rng.normal(40, 10, 3000)
    col = {"name": "age", "kind": "continuous", "dtype": "int", "method": "vgm", "min": 17.0, "max": 90.0,
           "mean": 40.0, "std": 10.0, "has_nulls": False, **fit_vgm(age)}
    cats = [{"name": "sex", "kind": "categorical", "dtype": "string", "categories": ["Male", "Female"],
             "frequencies": [0.67, 0.33]},
            {"name": "job", "kind": "categorical", "dtype": "string", "categories": ["a", "b", "c", None],
             "frequencies": [0.5, 0.3, 0.15, 0.05]}]
    return {"version": 2, "schema": SCHEMA.to_dict(), "columns": [col, *cats], "fitted_rows": 3000}


@pytest.fixture(scope="module", params=["gan", "tvae"])
def bundle(request):
    torch.manual_seed(0)
    spec = _spec()
    cfg = PipelineConfig(name="t", model_name="t", model={"family": request.param, "latent_dim": 4,
                                                          "hidden_dims": [16], "discriminator_dims": [16]})
    t = TableTransformer(spec)
    from gen_pipeline.models import build_model

    state = build_model(cfg.model, t.spans, t.output_dim).state_dict()  # untrained: any joint will do
    return ModelBundle(cfg, spec, state)


def test_conditions_give_only_matching_rows_reproducibly(bundle):
    a = bundle.sample(3000, seed=3, conditions={"sex": "Female"})
    b = bundle.sample(3000, seed=3, conditions={"sex": "Female"})
    assert len(a) == 3000 and (a["sex"] == "Female").all()
    pd.testing.assert_frame_equal(a, b)
    both = bundle.sample(500, seed=4, conditions={"sex": "Female", "job": "b"})
    assert ((both["sex"] == "Female") & (both["job"] == "b")).all()
    # the conditioned-on column is fixed; the others still vary, within the training range and as ints
    assert a["job"].nunique() > 1 and a["age"].between(17, 90).all()
    assert str(a["age"].dtype) == "Int64"


@pytest.mark.parametrize("pairs, message", [
    ({"gender": "Female"}, "no column 'gender'"),
    ({"age": "30"}, "age is continuous"),
    ({"sex": "female"}, "'female' is not in sex's training vocabulary"),
])
def test_bad_conditions_name_the_column_and_value(bundle, pairs, message):
    with pytest.raises(PipelineError, match=message):
        bundle.sample(10, seed=0, conditions=pairs)


def test_sampling_runs_in_chunks_no_larger_than_the_model_allows(bundle, monkeypatch):
    # Conv models set 4,096 images per forward: a 65,536-image DCGAN forward needs ~9 GB.
    monkeypatch.setattr(bundle.model, "max_sample_chunk", 700)
    sizes = [t.num_rows for t in bundle.sample_arrow(2500, seed=1)]
    assert sizes == [700, 700, 700, 400]


def test_dictionary_columns_write_the_same_rows_as_strings(bundle, tmp_path):
    """The generate job's path (categories as dictionary indices, written without an Arrow
    schema) reads back as the same rows and plain string columns, the missing category as null."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gen_pipeline.stages.sparkkit import write_part

    plain = pa.concat_tables(bundle.sample_arrow(5000, seed=9, chunk=2048))
    coded = list(bundle.sample_arrow(5000, seed=9, chunk=2048, dictionary=True))
    assert pa.types.is_dictionary(coded[0].schema.field("job").type)
    rows, _ = write_part(iter(coded), tmp_path, 0, string_statistics=False)
    back = pq.read_table(tmp_path / "part-00000.parquet")
    assert rows == 5000 and back.schema.equals(SCHEMA.arrow_schema(model_only=True))
    assert back.equals(plain)
    assert 0 < back.column("job").null_count < 5000  # the None category: null, as in the string path
