"""``run``: the five stages in order, and what happens when the gate refuses the new model."""

from __future__ import annotations

import time

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.models import family
from gen_pipeline.stages.evaluate import stage_evaluate
from gen_pipeline.stages.generate import stage_generate
from gen_pipeline.stages.preprocess import stage_preprocess
from gen_pipeline.stages.score import stage_score
from gen_pipeline.stages.train import stage_train


def run_all(cfg: PipelineConfig, rt, rows: int | None = None, seed: int | None = None) -> dict:
    """preprocess, train, evaluate, then generate and score with ``@champion``.

    When the gate refuses the new model, ``run`` says so in one line and goes on with the
    existing champion; with no champion at all it stops after evaluate with an error (exit
    status 2), so a scheduler sees that no model was published.
    """
    from gen_pipeline.registry import CHAMPION, alias_version

    t0 = time.perf_counter()
    outputs = {"preprocess": stage_preprocess(cfg, rt), "train": stage_train(cfg, rt),
               "evaluate": stage_evaluate(cfg, rt)}
    verdict = outputs["evaluate"]
    if not verdict["promoted"]:
        champion = alias_version(cfg.model_name, CHAMPION)
        if champion is None:
            raise PipelineError(f"the gate refused {cfg.model_name} version {verdict['version']} "
                                f"({verdict['reason']}) and there is no champion: no model was published; "
                                "generate and score skipped")
        print(f"[run] the gate refused version {verdict['version']} ({verdict['reason']}); generating and scoring "
              f"with the champion, version {champion.version}", flush=True)
    outputs["generate"] = stage_generate(cfg, rt, rows=rows, seed=seed)
    if family(cfg.model.family).can_score:
        outputs["score"] = stage_score(cfg, rt)
    outputs["seconds"] = round(time.perf_counter() - t0, 1)
    return outputs
