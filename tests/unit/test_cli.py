"""`--data/--name/--target` with or without a config file, and the table fields of DataConfig."""

import pytest

from gen_pipeline.cli import _config, build_parser
from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError


def _cfg(*argv):
    return _config(build_parser().parse_args(list(argv)))


def test_data_alone_makes_a_config_named_by_the_file_stem():
    c = _cfg("run", "--data", "/data/My Sales-2024.csv", "--target", "churn", "--set", "data.columns={zip: categorical}")
    assert (c.name, c.model_name) == ("My_Sales-2024", "My_Sales-2024")
    assert c.data.source == "/data/My Sales-2024.csv" and c.evaluate.tstr_label == "churn"
    assert c.data.columns == {"zip": "categorical"}
    assert PipelineConfig.model_validate(c.model_dump(mode="json")) == c  # the bundle's config reloads


def test_name_alone_and_a_config_file_with_data():
    assert _cfg("train", "--name", "sales").name == "sales"
    c = _cfg("preprocess", "--config", "configs/adult_tvae_tiny.yaml", "--data", "s3a://b/t/", "--name", "t1",
             "--set", "data.schema=t.yaml", "--set", "data.delimiter=;")
    assert (c.name, c.data.source, c.data.schema_path) == ("t1", "s3a://b/t/", "t.yaml")
    assert c.data.csv_options() == {"separator": ";"}
    with pytest.raises(PipelineError, match="pass --config FILE, or --data PATH"):
        _cfg("train")
    with pytest.raises(PipelineError, match="data.columns.zip"):
        _cfg("run", "--data", "t.csv", "--set", "data.columns={zip: wobbly}")
