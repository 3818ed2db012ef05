"""``gen-pipeline {preprocess,train,evaluate,generate,score,run} --config FILE [--set key=value]``.

Or with no config file, on your own table: ``gen-pipeline run --data PATH [--target COLUMN]
[--name NAME]`` (the name defaults to the file's stem; every stage takes --data/--name alike).

Errors a user can fix print as one line naming the file, column, row or field and what to do,
with exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import traceback

from gen_pipeline.errors import PipelineError

STAGES = ("preprocess", "train", "evaluate", "generate", "score", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gen-pipeline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    for stage in STAGES:
        p = sub.add_parser(stage)
        p.add_argument("--config", default=None, help="a named config, e.g. configs/adult_tvae.yaml "
                                                      "(or --data/--name instead)")
        p.add_argument("--data", default=None, help="your own table: a CSV/Parquet/ORC/JSON file, folder, glob "
                                                    "or URI Spark reads, or table:db.name (sets data.source)")
        p.add_argument("--name", default=None, help="the run's name (default: the --data file's stem)")
        p.add_argument("--target", default=None, help="the column train-on-synthetic evaluation predicts "
                                                      "(sets evaluate.tstr_label)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set train.epochs=3 (repeatable)")
        p.add_argument("--work-dir", default=None, help="where embedded outputs go (default ./work)")
        p.add_argument("--debug", action="store_true", help="show tracebacks")
        if stage in ("generate", "score"):
            p.add_argument("--model", default=None, help="models:/NAME@ALIAS or models:/NAME/VERSION "
                                                         "(default models:/<model_name>@champion)")
            p.add_argument("--out", default=None, help="output folder (replaced atomically)")
        if stage == "generate":
            p.add_argument("--condition", dest="conditions", action="append", default=[], metavar="COLUMN=VALUE",
                           help="only rows with this categorical value, e.g. --condition sex=Female (repeatable)")
        if stage in ("generate", "run"):
            p.add_argument("--rows", type=int, default=None, help="rows to generate")
            p.add_argument("--seed", type=int, default=None, help="generation seed")
        if stage == "score":
            p.add_argument("--input", dest="inputs", action="append", default=None,
                           help="raw file(s) in the model's original format (default: the held-out "
                                "records: a bundled table's test file; with --data/data.source, the test "
                                "split preprocess wrote)")
        if stage == "train":
            p.add_argument("--fail-at-epoch", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def _config(args):
    """The config file with --data/--name/--target applied, or one built from them alone."""
    from gen_pipeline.config import config_for_data, load_config

    extra = []
    if args.data:
        extra.append(f"data.source={json.dumps(args.data)}")
    if args.target:
        extra.append(f"evaluate.tstr_label={json.dumps(args.target)}")
    if args.config:
        if args.name:
            extra += [f"name={args.name}", f"model_name={args.name}"]
        return load_config(args.config, [*extra, *args.overrides])
    if not (args.data or args.name):
        raise PipelineError("pass --config FILE, or --data PATH (your own table) and/or --name NAME")
    return config_for_data(args.data, args.name, [*extra, *args.overrides])


def _dispatch(args) -> dict:
    from gen_pipeline.runtime import Runtime
    from gen_pipeline.stages.evaluate import stage_evaluate
    from gen_pipeline.stages.generate import stage_generate
    from gen_pipeline.stages.preprocess import stage_preprocess
    from gen_pipeline.stages.run import run_all
    from gen_pipeline.stages.score import stage_score
    from gen_pipeline.stages.train import stage_train

    cfg = _config(args)
    rt = Runtime.from_env(args.work_dir)
    if args.stage == "preprocess":
        return stage_preprocess(cfg, rt)
    if args.stage == "train":
        return stage_train(cfg, rt, fail_at_epoch=args.fail_at_epoch)
    if args.stage == "evaluate":
        return stage_evaluate(cfg, rt)
    if args.stage == "generate":
        conditions = {}
        for pair in args.conditions:
            column, sep, value = pair.partition("=")
            if not sep or not column:
                raise PipelineError(f"--condition {pair!r}: expected COLUMN=VALUE, e.g. --condition sex=Female")
            conditions[column.strip()] = value
        return stage_generate(cfg, rt, model=args.model, rows=args.rows, seed=args.seed, out=args.out,
                              conditions=conditions or None)
    if args.stage == "score":
        return stage_score(cfg, rt, model=args.model, inputs=args.inputs, out=args.out)
    outputs = run_all(cfg, rt, rows=args.rows, seed=args.seed)
    print("\n[run] done in {0}s. Outputs:".format(outputs["seconds"]))
    print(f"  preprocess : {outputs['preprocess']['preprocess']}")
    print(f"  model      : {outputs['train']['model']} = version {outputs['train']['version']} "
          f"(promoted to @champion: {outputs['evaluate']['promoted']})")
    print(f"  checkpoints: {outputs['train']['checkpoints']}")
    print(f"  generated  : {outputs['generate']['generated']} ({outputs['generate']['rows']:,} rows)")
    if "score" in outputs:
        print(f"  scored     : {outputs['score']['scored']} ({outputs['score']['rows_in']:,} rows)")
    print(f"  MLflow     : MLFLOW_TRACKING_URI={rt.tracking_uri}")
    return outputs


_ERROR_LINE = re.compile(r"^\s*(?:[\w.]+\.)?(\w*(?:Error|Exception)): (.+)$")


def engine_message(exc: BaseException) -> str:
    """The most telling line of an engine's failure (a Spark task's or a Ray worker's traceback
    is embedded in the exception text): the last ``SomethingError: message`` line in it."""
    text = str(exc)
    found = [m for m in map(_ERROR_LINE.match, text.splitlines()) if m]
    for m in reversed(found):  # our own message, raised inside a task, says the most
        if m.group(1) == "PipelineError":
            return m.group(2).strip()[:500]
    if found:
        return f"{found[-1].group(1)}: {found[-1].group(2).strip()}"[:500]
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        os.environ.setdefault("SPARK_LOG_LEVEL", "OFF")  # the one-line error below says what failed
    try:
        result = _dispatch(args)
    except PipelineError as e:
        if args.debug:
            traceback.print_exc()
        print(f"gen-pipeline {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"gen-pipeline {args.stage}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # an engine failed: one line; --debug shows the traceback
        if args.debug:
            traceback.print_exc()
        print(f"gen-pipeline {args.stage}: failed: {engine_message(e)} (rerun with --debug for the traceback)",
              file=sys.stderr)
        return 1
    if args.stage != "run":
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
