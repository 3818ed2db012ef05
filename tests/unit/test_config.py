from pathlib import Path

import pytest

from gen_pipeline.cli import main
from gen_pipeline.config import load_config
from gen_pipeline.errors import PipelineError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_named_config_loads(path):
    cfg = load_config(path)
    assert cfg.name == path.stem


def test_overrides_are_typed_and_nested():
    cfg = load_config(CONFIGS / "adult_tvae.yaml", ["train.epochs=3", "model.family=gan", "train.lr=0.0002"])
    assert cfg.train.epochs == 3 and cfg.model.family == "gan" and cfg.train.lr == pytest.approx(2e-4)


def test_unknown_field_is_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel_name: x\ntrain:\n  epocs: 3\n")
    with pytest.raises(PipelineError, match=r"train\.epocs: unknown field"):
        load_config(bad)


def test_mistyped_field_is_named():
    with pytest.raises(PipelineError, match=r"train\.batch_size"):
        load_config(CONFIGS / "adult_tvae.yaml", ["train.batch_size=many"])


def test_pac_must_divide_batch():
    with pytest.raises(PipelineError, match="multiple of model.pac"):
        load_config(CONFIGS / "adult_gan.yaml", ["train.batch_size=501"])


def test_missing_config_file_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "nope.yaml: config file not found" in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_datasets_families_and_metrics_come_from_the_registries():
    from gen_pipeline.kinds import all_datasets, all_metrics
    from gen_pipeline.models import FAMILIES

    assert {"adult", "shuttle", "fashion_mnist", "digits", "sine"} <= set(all_datasets())
    assert {"tvae", "gan", "dcgan", "conv_vae", "signal_vae"} <= set(FAMILIES)
    assert all_metrics()["fid"] is True and all_metrics()["quality_score"] is False  # lower is better?
    with pytest.raises(PipelineError, match="data.dataset: unknown 'adlt'"):
        load_config(CONFIGS / "adult_tvae_tiny.yaml", ["data.dataset=adlt"])
    with pytest.raises(PipelineError, match="model.family: 'dcgan' does not model table data"):
        load_config(CONFIGS / "adult_tvae_tiny.yaml", ["model.family=dcgan"])
    with pytest.raises(PipelineError, match="model.family: unknown 'tvea'"):
        load_config(CONFIGS / "adult_tvae_tiny.yaml", ["model.family=tvea"])


def test_the_kind_of_a_config_a_manifest_and_a_spec():
    from gen_pipeline.kinds import kind_of

    assert kind_of(load_config(CONFIGS / "digits_dcgan_tiny.yaml")).name == "image"
    assert kind_of(manifest={"kind": "signal"}).name == "signal"
    assert kind_of(spec={"version": 3, "columns": []}).name == "table"  # specs written before kinds
    with pytest.raises(PipelineError, match="unknown data kind 'audio'"):
        kind_of(spec={"kind": "audio"})


def test_discrete_values_is_read_under_its_first_name_too():
    assert load_config(CONFIGS / "adult_tvae_ar.yaml").transform.discrete_values == 128
    old = load_config(CONFIGS / "adult_tvae_tiny.yaml", ["transform.vgm_discrete_values=64"])
    assert old.transform.discrete_values == 64
    with pytest.raises(PipelineError, match="discrete_values"):
        load_config(CONFIGS / "adult_tvae_tiny.yaml", ["transform.discrete_values=-1"])
