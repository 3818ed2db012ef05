"""Failure handling that needs no engine: messages and retries."""

from gen_pipeline.cli import engine_message
from gen_pipeline.training.shell import _log_with_retry


def test_engine_message_prefers_our_error_raised_inside_a_task():
    text = ("An error occurred while calling o123.parquet.\n: org.apache.spark.SparkException: Job aborted\n"
            "Traceback (most recent call last):\n  File \"x.py\", line 1\n"
            "gen_pipeline.errors.PipelineError: row 3: column sex: unseen category 'X'\n\tat org.apache...")
    assert engine_message(RuntimeError(text)) == "row 3: column sex: unseen category 'X'"


def test_engine_message_falls_back_to_the_last_error_line():
    text = "stage failed\nValueError: bad thing\nmore\nOSError: disk full"
    assert engine_message(RuntimeError(text)) == "OSError: disk full"
    assert engine_message(KeyError("k")) == "KeyError: 'k'"


def test_logging_is_retried_with_backoff_then_given_up(capsys):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("server down")

    assert _log_with_retry(flaky, epoch=4, tries=4, first_wait=0.01) is True and len(calls) == 3

    def down():
        raise ConnectionError("server down")

    assert _log_with_retry(down, epoch=5, tries=2, first_wait=0.01) is False
    assert "could not log epoch 5 metrics" in capsys.readouterr().out
