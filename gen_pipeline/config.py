"""Typed, composed configuration: one small pydantic model per component.

Dicts become models exactly once, here, at the boundary (YAML file + ``--set key=value``
overrides). Unknown or mistyped fields fail on load with the dotted field path in the message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gen_pipeline.errors import PipelineError


MAX_ROWS = 10_000_000_000  # a row count above this is a typo, not a request


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataConfig(_Strict):
    """Where the raw table comes from and how it is split."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    dataset: str = "adult"  # one of the registered kinds' datasets (gen_pipeline.kinds); or data.source
    # Image sets: the folder of PNGs (one subfolder per class) or the .npz file to read, and the
    # image side every image must have (None = the dataset's own: 28 Fashion-MNIST, 8 digits, the
    # images' own for image_folder / image_npz; README "Your images as they come").
    path: str | None = None
    image_size: int | None = Field(default=None, ge=4)
    # Keep this seeded share of the TRAIN split (by a hash of each record's source and position,
    # so a smaller share is a subset of a larger one); validation and test keep every record.
    train_fraction: float = Field(default=1.0, gt=0.0, le=1.0)
    # A Spark SQL condition the TRAIN split must meet (e.g. "anomaly = 0" to learn normal rows
    # only); other train rows are counted as excluded, validation and test keep every row.
    train_where: str | None = None
    # Read at most this many data lines of each raw file (None = all): the tiny test configs.
    max_rows_per_file: int | None = Field(default=None, gt=0)
    # hash: every record is split by a hash; files: a dataset's official test file is the test
    # split and the validation rows are carved from its training file (as the papers do for
    # Adult: train on adult.data, test on adult.test), by hash for sets without one.
    split: Literal["hash", "files"] = "hash"
    validation_fraction: float = Field(default=0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    split_salt: str = "gen_pipeline"
    # Encoded Parquet files per split: at least the number of train workers, so each reads its own.
    num_files: int = Field(default=4, ge=1)
    # Your own table (instead of ``dataset``): a path or URI Spark reads (local, file://, s3a://,
    # hdfs://, gs://, abfss:// with the cluster's connector), a folder, a glob, a list of them, or
    # ``table:db.name``; the format by extension or ``format``; CSV options (None = the schema's,
    # for an inferred schema: header on, the delimiter sniffed from the first line, RFC 4180 quotes).
    source: str | list[str] | None = None
    format: Literal["csv", "parquet", "orc", "json"] | None = None
    header: bool | None = None
    delimiter: str | None = None
    quote: str | None = None
    escape: str | None = None
    multi_line: bool | None = None
    encoding: str | None = None
    # The table's schema file (None: <work>/schemas/<name>.yaml, inferred on the first preprocess
    # and reused; ``reinfer`` infers it again); single kinds overridden, e.g. {zip: categorical}.
    schema_path: str | None = Field(default=None, alias="schema")
    columns: dict[str, Literal["continuous", "categorical", "boolean", "datetime", "date", "identifier",
                               "constant", "text", "label"]] = {}
    reinfer: bool = False

    def csv_options(self) -> dict:
        """The CSV options set here, as the schema names them."""
        opts = {"header": self.header, "separator": self.delimiter, "quote": self.quote, "escape": self.escape,
                "multi_line": self.multi_line, "encoding": self.encoding}
        return {k: v for k, v in opts.items() if v is not None}


class TransformConfig(_Strict):
    """How continuous columns are encoded (categoricals are always one-hot).

    ``vgm``: CTGAN/TVAE's mode-specific normalisation, a Gaussian mixture per column fitted on
    a bounded sample of ``vgm_sample_rows`` rows; ``quantile``: to a standard normal through
    ``num_quantiles`` Spark percentiles; ``standard``: mean and standard deviation. Whatever the
    method, ``discrete_values`` > 0 makes each column of few whole numbers one point mass per
    value instead.
    """

    continuous: Literal["vgm", "quantile", "standard"] = "quantile"
    num_quantiles: int = Field(default=200, ge=10, le=2000)
    vgm_sample_rows: int = Field(default=20_000, ge=100, le=1_000_000)
    # vgm: a single value held by at least this share of the rows (a spike such as Adult's
    # capital_gain = 0) becomes a mode of its own that decodes to exactly that value; 1 turns
    # point masses off for all but constant columns.
    vgm_point_share: float = Field(default=0.05, gt=0.0, le=1.0)
    # Any method: a column of whole numbers with at most this many distinct values (in a seeded
    # sample of vgm_sample_rows rows) is one point mass per value, learned as categories
    # (Adult's age, hours per week), its spikes and gaps exactly; 0: off. (Also read under its
    # first name, vgm_discrete_values.)
    discrete_values: int = Field(default=0, ge=0, le=10_000,
                                 validation_alias=AliasChoices("discrete_values", "vgm_discrete_values"))
    # A categorical column keeps its most frequent values up to this many one-hot slots; the
    # rarer ones share one slot and are drawn back by their training frequencies when decoded.
    max_categories: int = Field(default=100, ge=2, le=100_000)
    # A column that is a function of one categorical column in every training row (Adult's
    # education_num of education; an airport's name and coordinates of its code) is not
    # modelled: it is regenerated by looking its value up from the generated one, so the two
    # always agree (kinds/table/fitting.py lookup_columns has the rules). With it, value rules:
    # a categorical value that fixes another categorical column's value in >= 99.8% of its rows
    # (Husband -> Male) is generated with it (fitting.py value_rules).
    lookup_columns: bool = True


class ModelConfig(_Strict):
    """Which model family and its size."""

    family: str = "tvae"  # a registered family (gen_pipeline.models.FAMILIES)
    latent_dim: int = Field(default=64, ge=2)
    hidden_dims: tuple[int, ...] = (128, 128)
    # GAN only
    discriminator_dims: tuple[int, ...] = (256, 256)
    pac: int = Field(default=1, ge=1)
    gumbel_tau: float = Field(default=0.2, gt=0.0)
    # bce: the classic game (non-saturating G loss); wgan_gp: Wasserstein loss + gradient penalty
    objective: Literal["bce", "wgan_gp"] = "bce"
    gp_weight: float = Field(default=10.0, ge=0.0)
    # CTGAN's conditional vector with training-by-sampling over the categorical columns
    conditional: bool = True
    # TVAE only: weight of the reconstruction term against KL (TVAE's loss_factor).
    loss_factor: float = Field(default=2.0, gt=0.0)
    # tvae_mix only: Gaussians in its learned mixture prior over the latent space.
    prior_components: int = Field(default=64, ge=1)
    # ex_post: the encoder and decoder train as the TVAE (KL to N(0, I)) while the mixture fits
    # their posterior samples beside them, for sampling; joint: the mixture is the ELBO's prior.
    prior_training: Literal["ex_post", "joint"] = "ex_post"
    # tvae_ar only: the hidden widths of its masked autoregressive decoder (its encoder is
    # ``hidden_dims``); each layer's units are shared out over the encoded spans.
    decoder_hidden_dims: tuple[int, ...] = (256,)
    # Image models (dcgan, conv_vae): conv width and VAE likelihood; ``conditional`` above makes
    # them class-conditional on the image label.
    base_channels: int = Field(default=32, ge=4)
    likelihood: Literal["bernoulli", "continuous_bernoulli"] = "bernoulli"
    # Image models: how the generator/decoder doubles the side. resize: nearest-neighbour x2
    # then a 3x3 conv (Odena et al. 2016: no checkerboard); transposed: 4x4 stride-2 transposed convs.
    upsample: Literal["resize", "transposed"] = "resize"
    # DCGAN, the small-data remedies (see gen_pipeline/models/dcgan.py): DiffAugment's
    # transformations of every image the discriminator sees ("" or "none": off; Zhao et al. 2020),
    # spectral normalisation of the discriminator's layers (Miyato et al. 2018), the decay of the
    # generator's exponential moving average used for sampling (0: off, sample the raw weights),
    # and the R1 penalty on real images' gradients (Mescheder et al. 2018; 0: off), applied
    # every r1_every discriminator steps with its weight scaled up to match (lazy regularisation).
    # DiffAugment's default is its colour transformations only: on 8x8 digits translation and
    # cutout made FID worse within 800 steps (benchmarks/RESULTS.md); "color,translation,cutout"
    # is the paper's full policy, for long runs on small sets.
    diff_augment: str = Field(default="color",
                              pattern=r"^(|none|(color|translation|cutout)(,(color|translation|cutout))*)$")
    spectral_norm: bool = True
    # (tvae_ar too: it samples and scores the moving average of its weights.)
    ema_decay: float = Field(default=0.999, ge=0.0, lt=1.0)
    # Tables: after training, each continuous column's generated values are mapped monotonically
    # onto the training quantiles (fitted on 50,000 rows the model draws; the rows keep their
    # order within each column, so relations that follow order stay), and where categories are
    # drawn from the model's logits (not tvae_ar, which draws them itself) each category's and
    # each null indicator's share is matched to its training frequency by log-weights on the
    # logits. Columns learned as point masses are left as drawn.
    calibrate_marginals: bool = True
    r1_gamma: float = Field(default=0.0, ge=0.0)
    r1_every: int = Field(default=16, ge=1)


class TrainConfig(_Strict):
    """The training loop and its distribution over Ray Train workers."""

    epochs: int = Field(default=30, ge=1)
    # The least number of optimizer steps (per worker) the run takes: a small train split makes
    # each epoch longer (several passes over the data) instead of starving the model. An epoch
    # stays the unit of the per-epoch lines, checkpoints and pictures: ``epochs`` of them, each of
    # max(one pass, ceil(min_steps / epochs)) steps. None: the data kind's default (4,000 for
    # images, 0, one pass per epoch, for tables).
    min_steps: int | None = Field(default=None, ge=0)
    batch_size: int = Field(default=500, ge=2)
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=1e-5, ge=0.0)
    seed: int = 0
    num_workers: int = Field(default=2, ge=1)
    cpus_per_worker: float = Field(default=0.5, gt=0.0)
    use_gpu: bool = False
    # On a GPU: bf16 autocast, or plain float32. The shipped models are small enough that their
    # steps are bound by kernel launches, not arithmetic, so float32 can be faster
    # (benchmarks/RESULTS.md, GPU). bf16 pays off for wider models.
    precision: Literal["bf16", "fp32"] = "bf16"
    # On CPU: bf16 autocast only where the CPU has native bf16 instructions (oneDNN reports them:
    # AVX512-BF16 or AMX); float32 elsewhere whatever this says. None: the data kind's default,
    # bf16 for images (the DCGAN's step takes 0.62x the CPU time, benchmarks/RESULTS.md) and
    # float32 for tables (small MLPs gain little, and their likelihoods want the precision).
    cpu_precision: Literal["bf16", "fp32"] | None = None
    # memory: each worker reads the encoded Parquet into tensors once (tables that fit in RAM).
    loader: Literal["petastorm", "ray_data", "memory"] = "ray_data"
    # ray_data: a train split whose decoded size is at most this share of Ray's object store is
    # read from Parquet once and kept there (Dataset.materialize), so later epochs skip the
    # Parquet decode; a larger one streams from Parquet every epoch.
    # 0 always streams.
    ray_data_cache_fraction: float = Field(default=0.25, ge=0.0, le=1.0)
    max_failures: int = Field(default=2, ge=0)
    checkpoints_to_keep: int = Field(default=2, ge=1)
    # The Ray Train run (a folder under ray_results/). None: the unfinished run of this config and
    # data if a driver died during it (so starting again resumes it), else a new one. A name given
    # here resumes that run's last checkpoint, e.g. to continue it with more epochs.
    run_name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")


class EvaluateConfig(_Strict):
    """Held-out evaluation and the promotion gate."""

    num_rows: int | None = Field(default=None, gt=0)  # None = as many rows as the test split
    seed: int = 1234
    # The gate: the metric a candidate must beat the champion on; None: the kind's default
    # (tables quality_score, images fid). Any metric a kind reports (the kinds say which are
    # lower-is-better: detection AUCs, FID, ...).
    primary_metric: str | None = None
    min_quality_score: float | None = Field(default=None, ge=0.0, le=1.0)
    # How much better than the champion (in the primary metric's units) a candidate must be:
    # "measurably improved", not a difference within the evaluation's sampling noise.
    min_improvement: float = Field(default=0.0, ge=0.0)
    # Tables: train-synthetic-test-real (SDGym's four classifiers) predicts this categorical model
    # column, F1 on its positive class (None = its rarer class); no label skips it (e.g. Shuttle,
    # whose anomaly label is never generated). Metrics subsample each frame to max_rows rows.
    tstr_label: str | None = None
    tstr_positive: str | None = None
    max_rows: int = Field(default=10_000, ge=100)
    min_tstr_f1: float | None = Field(default=None, ge=0.0, le=1.0)
    max_detection_auc: float | None = Field(default=None, ge=0.5, le=1.0)
    max_exact_copy_share: float | None = Field(default=None, ge=0.0, le=1.0)
    # The papers' gradient-boosted protocol (kinds/table/detection.py): detection AUC against, and
    # train-on-synthetic AUC from, as many synthetic rows as real training rows, at most
    # gbt_max_rows (50,000 covers Adult's whole train split). Rows drawn column by column from
    # the real marginals are always scored the same way (the gate's default baseline);
    # reference_rows adds the real held-out (validation) rows: the floor and ceiling of every figure.
    gbt_max_rows: int = Field(default=50_000, ge=100)
    reference_rows: bool = True
    min_quality_score_all_pairs: float | None = Field(default=None, ge=0.0, le=1.0)
    max_detection_auc_gbt: float | None = Field(default=None, ge=0.5, le=1.0)
    min_tstr_auc_gbt: float | None = Field(default=None, ge=0.0, le=1.0)
    # Images: the gate's ceiling on FID (lower is better) and the epochs of the pipeline's own
    # classifier (trained on the real train split; its features define FID).
    max_fid: float | None = Field(default=None, gt=0.0)
    min_conditional_accuracy: float | None = Field(default=None, ge=0.0, le=1.0)
    classifier_epochs: int = Field(default=3, ge=1)

    @field_validator("primary_metric")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        from gen_pipeline.kinds import all_metrics

        if v is not None and v not in all_metrics():
            raise ValueError(f"unknown metric {v!r} (known: {', '.join(sorted(all_metrics()))})")
        return v

    @model_validator(mode="after")
    def _tstr_needs_a_label(self) -> "EvaluateConfig":
        if self.tstr_label is None and (self.min_tstr_f1 is not None or self.min_tstr_auc_gbt is not None
                                        or self.primary_metric in ("tstr_f1_mean", "tstr_auc_gbt")):
            raise ValueError("min_tstr_f1, min_tstr_auc_gbt and primary_metric tstr_f1_mean / tstr_auc_gbt "
                             "need evaluate.tstr_label")
        return self


class GenerateConfig(_Strict):
    """Defaults for the generate job (the CLI flags override them)."""

    rows: int = Field(default=1_000_000, gt=0, le=MAX_ROWS)
    seed: int = 7
    rows_per_partition: int = Field(default=250_000, gt=0)


class PipelineConfig(_Strict):
    """A whole named run: data, transforms, model, training, evaluation, generation."""

    name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    model_name: str = Field(pattern=r"^[A-Za-z0-9_\-]+$")
    data: DataConfig = DataConfig()
    transform: TransformConfig = TransformConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    generate: GenerateConfig = GenerateConfig()

    @model_validator(mode="after")
    def _known_dataset_and_family(self) -> "PipelineConfig":
        from gen_pipeline.kinds import all_datasets, kind_for_dataset
        from gen_pipeline.models import FAMILIES

        if self.data.dataset not in all_datasets():
            raise ValueError(f"data.dataset: unknown {self.data.dataset!r} (known: {', '.join(all_datasets())})")
        if self.model.family not in FAMILIES:
            raise ValueError(f"model.family: unknown {self.model.family!r} (known: {', '.join(FAMILIES)})")
        kind = kind_for_dataset(self.data.dataset).name
        if kind not in FAMILIES[self.model.family].kinds:
            fits = [f for f, s in FAMILIES.items() if kind in s.kinds]
            raise ValueError(f"model.family: {self.model.family!r} does not model {kind} data "
                             f"(data.dataset={self.data.dataset}); use one of {', '.join(fits)}")
        return self

    @model_validator(mode="after")
    def _pac_divides_batch(self) -> "PipelineConfig":
        if self.train.batch_size % self.model.pac:  # PacGAN packs rows into groups of pac
            raise ValueError(
                f"train.batch_size ({self.train.batch_size}) must be a multiple of model.pac ({self.model.pac})"
            )
        return self


def _set_dotted(tree: dict, dotted: str, value: object) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise PipelineError(f"--set {dotted}: '{key}' is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(pairs: list[str]) -> dict:
    """``["train.epochs=3", "model.family=gan"]`` -> nested dict; values parsed as YAML scalars."""
    tree: dict = {}
    for pair in pairs:
        if "=" not in pair:
            raise PipelineError(f"--set {pair!r}: expected key=value, e.g. --set train.epochs=3")
        key, raw = pair.split("=", 1)
        _set_dotted(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _format_validation(source: str, err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling against configs/adult_tvae.yaml)"
        parts.append(f"{field}: {msg}")
    return f"{source}: invalid config: " + "; ".join(parts)


def load_config(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read a YAML config, apply ``key=value`` overrides and validate it."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: config file not found (named configs live in configs/)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    raw = _merge(raw, parse_overrides(overrides or []))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise PipelineError(_format_validation(str(path), e)) from None


def config_for_data(data: str | None, name: str | None, overrides: list[str] | None = None) -> PipelineConfig:
    """A config for a table with no config file: the defaults, named by ``name`` or the file's
    stem, plus ``key=value`` overrides (``data.source`` among them)."""
    from gen_pipeline.kinds.table.sources import TableSource

    name = name or TableSource.of(data).name()
    raw = _merge({"name": name, "model_name": name}, parse_overrides(overrides or []))
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as e:
        raise PipelineError(_format_validation("--data/--name", e)) from None
