"""MLflow adapter: the self-describing pyfunc model, registration and aliases.

Every model logged by any release imports ``gen_pipeline.registry.GenerativePyfunc`` (through
``pyfunc_entry.py``): it stays here.

The logged model carries the weights (a state dict), the model config, the transform spec and
the preprocess manifest as artifacts, plus this package's code, so
``mlflow.pyfunc.load_model("models:/NAME@champion")`` works from a plain Python shell and
``predict`` returns rows in the original schema.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
import pandas as pd
import torch

from gen_pipeline.bundle import ModelBundle
from gen_pipeline.errors import PipelineError

CANDIDATE, CHAMPION = "candidate", "champion"
_PACKAGE_DIR = Path(__file__).resolve().parent


class GenerativePyfunc(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame[num_rows, seed])`` -> generated rows in the original schema.

    With ``params={"task": "score"}`` the input is rows in the original schema and the output
    adds ``score`` (negative ELBO, nats) and ``reason`` (why a row could not be scored).
    """

    def load_context(self, context):
        self.bundle = ModelBundle.load(context.artifacts)  # tensors and JSON only

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        task = (params or {}).get("task", "generate")
        if task == "score":
            scores, reasons = self.bundle.score(model_input)
            return model_input.assign(score=scores, reason=reasons)
        frames = [self.bundle.sample(int(r.num_rows), int(r.seed)) for r in model_input.itertuples()]
        return pd.concat(frames, ignore_index=True)


def log_and_register(bundle: ModelBundle, model_name: str) -> tuple[str, str]:
    """Log the pyfunc into the active run, register a new version, alias it ``candidate``.

    Returns (model version, model URI).
    """
    import warnings

    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as d:
        artifacts = bundle.save(d)
        example = pd.DataFrame({"num_rows": [5], "seed": [7]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "integer columns cannot hold missing values"
            signature = infer_signature(example, bundle.sample(5, 7), params={"task": "generate"})
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(_PACKAGE_DIR / "pyfunc_entry.py"),  # models-from-code: nothing pickled
            artifacts=artifacts,
            code_paths=[str(_PACKAGE_DIR)],
            signature=signature,
            input_example=example,
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "numpy==1.26.4", "pandas==2.3.3",
                              "pyarrow==14.0.2", "scipy", "pydantic>=2", "pyyaml", f"mlflow=={mlflow.__version__}"],
            registered_model_name=model_name,
        )
    version = str(info.registered_model_version)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(model_name, CANDIDATE, version)
    client.set_model_version_tag(model_name, version, "family", bundle.config.model.family)
    client.set_model_version_tag(model_name, version, "data_fingerprint", bundle.manifest.get("fingerprint", ""))
    return version, f"models:/{model_name}/{version}"


def resolve(uri: str):
    """``models:/NAME@alias`` or ``models:/NAME/VERSION`` -> (ModelVersion, python model)."""
    client = mlflow.MlflowClient()
    if not uri.startswith("models:/"):
        raise PipelineError(f"--model {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    ref = uri[len("models:/"):]
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = ref.split("/", 1)
            mv = client.get_model_version(name, version)
    except mlflow.exceptions.MlflowException as e:
        raise PipelineError(f"--model {uri}: no such registered model version or alias "
                            f"({str(e).splitlines()[0][:200]}); run `gen-pipeline train` and "
                            "`gen-pipeline evaluate` first, or check MLFLOW_TRACKING_URI") from None
    pyfunc = mlflow.pyfunc.load_model(f"models:/{mv.name}/{mv.version}")
    return mv, pyfunc.unwrap_python_model()


def alias_version(name: str, alias: str):
    client = mlflow.MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
