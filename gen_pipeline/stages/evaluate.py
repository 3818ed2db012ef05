"""evaluate, one flow for every kind: the candidate and the champion (re-evaluated on the same
rows and seed) are judged by their kind's metrics, the one gate (``gen_pipeline.gate``) decides,
and the report, metrics, decision and reason land on the candidate's run and model version;
``@champion`` moves only on a pass."""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from gen_pipeline.config import PipelineConfig
from gen_pipeline.layout import PreprocessOutput, RunLayout


def metric_key(name: str) -> str:
    """``name`` as MLflow accepts a metric key: a per-column metric of a user's column such as
    ``Culmen Length (mm)`` or ``Delta 15 N (o/oo)`` keeps letters, digits, ``_ - .`` and spaces,
    the rest becomes ``_`` (report.json keeps the column's own name)."""
    return re.sub(r"[^\w\-. ]", "_", name)


def stage_evaluate(cfg: PipelineConfig, rt) -> dict:
    from gen_pipeline import gate
    from gen_pipeline.registry import CANDIDATE, CHAMPION, alias_version, resolve

    ev = cfg.evaluate
    mlflow = rt.mlflow(cfg.name)
    client = mlflow.MlflowClient()
    data = PreprocessOutput(RunLayout(rt.work_dir, cfg.name).preprocess).require()
    cand_mv, cand = resolve(f"models:/{cfg.model_name}@{CANDIDATE}")
    bundle = cand.bundle
    kind = bundle.kind
    result = kind.evaluate(bundle, data, ev, bundle.family)
    metrics = result.metrics
    champ_mv = alias_version(cfg.model_name, CHAMPION)
    champ_metrics = None
    if champ_mv is not None and champ_mv.version != cand_mv.version:
        _, champ = resolve(f"models:/{cfg.model_name}/{champ_mv.version}")  # same rows, same seed
        champ_metrics = kind.evaluate(champ.bundle, data, ev, champ.bundle.family, references=False).metrics
    primary = ev.primary_metric or kind.default_primary_metric
    minimums, maximums = gate.bounds(ev, kind.baseline_bounds(metrics, bundle, ev))
    promote, reason = gate.gate(metrics, champ_metrics, primary, kind.lower_is_better(primary), minimums, maximums,
                                ev.min_improvement)
    if champ_mv is not None and champ_mv.version == cand_mv.version:
        promote, reason = False, "the candidate is already the champion" + ("" if promote else f"; {reason}")

    for k, v in metrics.items():
        client.log_metric(cand_mv.run_id, metric_key(f"eval_{k}"), v)
    title = f"{cfg.model_name} v{cand_mv.version}: {'promoted' if promote else 'not promoted'} ({reason})"
    with tempfile.TemporaryDirectory() as d:
        for write in result.artifacts.values():
            for path in write(Path(d), title):
                client.log_artifact(cand_mv.run_id, str(path), "evaluation")
        (Path(d) / "report.json").write_text(json.dumps(
            {"metrics": metrics, "champion_metrics": champ_metrics, "primary_metric": primary,
             "bounds": {"min": minimums, "max": maximums}, "promoted": promote, "reason": reason}, indent=1))
        client.log_artifact(cand_mv.run_id, str(Path(d) / "report.json"), "evaluation")
    tags = {"gate_decision": "promoted" if promote else "rejected", "gate_reason": reason[:5000]}
    if primary in metrics:
        tags[primary] = f"{metrics[primary]:.6f}"
    for k, v in tags.items():
        client.set_model_version_tag(cfg.model_name, cand_mv.version, k, v)
    if promote:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, cand_mv.version)
    summary = " ".join(f"{k}={metrics[k]:.4f}" for k in result.summary_keys if k in metrics)
    print(f"[evaluate] {cfg.model_name} v{cand_mv.version}: {summary}", flush=True)
    for line in result.lines:
        print(f"[evaluate] {line}", flush=True)
    print(f"[evaluate] gate: {'PROMOTED to @champion' if promote else 'not promoted'} ({reason})", flush=True)
    return {"version": cand_mv.version, "promoted": promote, "reason": reason, **metrics}
