"""MLflow models-from-code entry: the logged model is this file plus the package, not a pickle."""

import mlflow

from gen_pipeline.registry import GenerativePyfunc

mlflow.models.set_model(GenerativePyfunc())
