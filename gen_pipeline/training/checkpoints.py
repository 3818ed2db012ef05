"""Checkpoints (tensors and plain values only, so loading never unpickles arbitrary objects) and
run identity: which Ray Train run a ``train`` call works on, so a restarted driver resumes it."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from gen_pipeline.config import PipelineConfig
from gen_pipeline.errors import PipelineError
from gen_pipeline.models.base import GenerativeModel
from gen_pipeline.training.loop import FitState

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, model: GenerativeModel, state: FitState) -> None:
    torch.save({
        "model": model.state_dict(),
        "optimizers": model.optimizer_state(),
        "epoch": state.start_epoch,
        "history": state.history,
        "resumed_from": state.resumed_from,
        "rng": torch.get_rng_state(),
    }, path)


def load_checkpoint(path: Path, model: GenerativeModel | None = None) -> tuple[dict, FitState]:
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if model is not None:
        model.load_state_dict(ckpt["model"])
        model.load_optimizer_state(ckpt["optimizers"])
        torch.set_rng_state(ckpt["rng"])
    return ckpt, FitState(start_epoch=int(ckpt["epoch"]), history=list(ckpt["history"]),
                          resumed_from=list(ckpt["resumed_from"]))


def latest_checkpoint(run_dir: Path) -> tuple[Path, int] | None:
    """The folder and epoch of the newest readable checkpoint a run wrote, if any.

    Read from disk rather than from Ray's run snapshot: a checkpoint is on disk once its
    ``ray.train.report`` returned, while the snapshot lags by up to a controller poll, so a
    driver killed in between would otherwise lose one more epoch. A file cut short by the
    kill does not load and is skipped.
    """
    found = []
    for f in run_dir.glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
        try:
            found.append((int(torch.load(f, map_location="cpu", weights_only=True)["epoch"]), f.parent))
        except Exception:  # a partial write from a killed run
            continue
    if not found:
        return None
    epoch, folder = max(found, key=lambda t: (t[0], t[1].stat().st_mtime))
    return folder, epoch


@dataclass
class RunRecord:
    """What the driver remembers of a Ray Train run, so that a restarted driver finds it again."""

    name: str  # RunConfig(name=...): the folder under the Ray storage path
    mlflow_run_id: str | None = None
    model_version: str | None = None  # set once the model is registered: the run is finished

    def save(self, runs_dir: Path) -> None:
        runs_dir.mkdir(parents=True, exist_ok=True)
        tmp = runs_dir / f".{self.name}.json.tmp"
        tmp.write_text(json.dumps(self.__dict__))
        tmp.replace(runs_dir / f"{self.name}.json")  # never a half-written record

    @classmethod
    def load(cls, runs_dir: Path, name: str) -> "RunRecord | None":
        path = runs_dir / f"{name}.json"
        return cls(**json.loads(path.read_text())) if path.is_file() else None


def training_key(cfg: PipelineConfig, data_fingerprint: str) -> str:
    """A digest of everything that decides the training (not evaluate/generate settings)."""
    what = cfg.model_dump(mode="json", exclude={"evaluate", "generate"})
    what["train"].pop("run_name", None)
    return hashlib.sha1(json.dumps([what, data_fingerprint], sort_keys=True).encode()).hexdigest()[:10]


def plan_run(cfg: PipelineConfig, runs_dir: Path, data_fingerprint: str) -> RunRecord:
    """The Ray Train run a ``train`` call works on.

    ``train.run_name`` if given; else ``<name>-<training key>-<n>`` with the first ``n`` whose
    run has not registered a model yet: a run whose driver died is picked up again (same
    config, same data), a finished one is never touched and the next call trains anew.
    """
    if cfg.train.run_name:
        record = RunRecord.load(runs_dir, cfg.train.run_name) or RunRecord(cfg.train.run_name)
        if record.model_version is not None:
            raise PipelineError(f"train.run_name={cfg.train.run_name}: that run already finished and registered "
                                f"version {record.model_version}; give a new name to train again")
        return record
    base = f"{cfg.name}-{training_key(cfg, data_fingerprint)}"
    for n in itertools.count(1):
        record = RunRecord.load(runs_dir, f"{base}-{n}")
        if record is None:
            return RunRecord(f"{base}-{n}")
        if record.model_version is None:
            return record
    raise AssertionError("unreachable")
