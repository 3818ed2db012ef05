"""Evaluating image models: the pipeline's own classifier, FID on its features, conditional
accuracy, test ELBO in nats and bits per dimension, sample grids, and the image gate.

Nothing is downloaded: FID (Heusel et al. 2017) is computed on the penultimate features of a
small CNN the pipeline trains on the real training split (cached beside the preprocess output as
``classifier.pt``), not on Inception features, so its values compare across our runs, not with
published Inception FIDs.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.errors import PipelineError

CLASSIFIER_FILE = "classifier.pt"
FEATURE_DIM = 128


class Classifier(nn.Module):
    """A small CNN: two conv blocks, a 128-d feature layer (FID's features), a linear head."""

    def __init__(self, side: int, k: int):
        super().__init__()
        self.side, self.k = side, k
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 32, S/2, S/2)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, S/4, S/4)
            nn.Flatten(), nn.Linear(64 * (side // 4) ** 2, FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, k))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(pixels.reshape(-1, 1, self.side, self.side))  # (B, 128)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))  # (B, K) logits


def train_classifier(x: np.ndarray, y: np.ndarray, side: int, k: int, epochs: int, seed: int = 0,
                     batch_size: int = 128, lr: float = 1e-3) -> Classifier:
    """Fit the classifier on pixels ``x`` (N, S*S) in [0, 1] and labels ``y`` (N,)."""
    torch.manual_seed(seed)
    clf = Classifier(side, k)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    xt, yt = torch.from_numpy(np.ascontiguousarray(x[:, :side * side], dtype=np.float32)), torch.from_numpy(y).long()
    g = torch.Generator().manual_seed(seed)
    clf.train()
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), batch_size):
            idx = order[i:i + batch_size]
            loss = F.cross_entropy(clf(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    clf.eval()
    return clf


@torch.no_grad()
def predict(clf: Classifier, x: np.ndarray | torch.Tensor, batch: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128), predicted class (N,)) for pixels (N, >= S*S)."""
    x = torch.as_tensor(x, dtype=torch.float32)[:, :clf.side * clf.side]
    feats, preds = [], []
    for i in range(0, len(x), batch):
        f = clf.features(x[i:i + batch])
        feats.append(f.numpy())
        preds.append(clf.head(f).argmax(1).numpy())
    if not feats:
        return np.zeros((0, FEATURE_DIM), np.float32), np.zeros(0, np.int64)
    return np.concatenate(feats), np.concatenate(preds)


def accuracy(clf: Classifier, x: np.ndarray, y: np.ndarray) -> float:
    return float((predict(clf, x)[1] == y).mean())


def ensure_classifier(preprocess_dir: Path, epochs: int, seed: int = 0, log=None) -> tuple[Classifier, dict]:
    """The pipeline's classifier for this preprocess output: trained once on the real train split
    and cached as ``classifier.pt`` (tensors only) beside it; retrained when the data changed."""
    from gen_pipeline.images import read_encoded

    log = log or (lambda msg: print(msg, flush=True))
    pre = Path(preprocess_dir)
    manifest = json.loads((pre / "manifest.json").read_text())
    side, k = manifest["image_shape"][1], len(manifest["classes"])
    if k < 2:
        raise PipelineError(f"{pre}: FID and conditional accuracy need a labelled image set (found {k} classes)")
    path = pre / CLASSIFIER_FILE
    # Reuse one trained on the same images and split by another run (another model, or a one-class
    # run whose train split it could not learn every class from): it is the same yardstick.
    siblings = [p for p in sorted(pre.parents[1].glob(f"*/preprocess/{CLASSIFIER_FILE}")) if p != path]
    for candidate in [path, *siblings]:
        if not candidate.is_file():
            continue
        other = json.loads((candidate.parent / "manifest.json").read_text())
        # (not one trained on a share of the train split: data.train_fraction < 1)
        same = other["fingerprint"] == manifest["fingerprint"] or (
            _split_key(other) == _split_key(manifest) and not other.get("rows_excluded")
            and other.get("train_fraction", 1.0) >= 1.0)
        d = torch.load(candidate, map_location="cpu", weights_only=True)
        if same and d["fingerprint"] == other["fingerprint"] and int(d["epochs"]) == epochs:
            clf = Classifier(side, k)
            clf.load_state_dict(d["state_dict"])
            clf.eval()
            if candidate != path:
                torch.save({**d, "fingerprint": manifest["fingerprint"]}, path)
                log(f"[evaluate] reusing the classifier of {candidate.parent} (same images and split)")
            return clf, json.loads(d["info"])
    t0 = time.perf_counter()
    x, y = read_encoded(pre, "train")
    keep = y >= 0
    if manifest.get("rows_excluded"):
        # train_where left out some classes (one-class anomaly runs): FID still needs a classifier
        # that knows every class, so it learns from the validation split's images too.
        xv, yv = read_encoded(pre, "validation")
        x, y, keep = np.concatenate([x, xv]), np.concatenate([y, yv]), np.concatenate([keep, yv >= 0])
    log(f"[evaluate] training the pipeline's classifier on {int(keep.sum())} real images ({epochs} epochs)")
    clf = train_classifier(x[keep], y[keep], side, k, epochs, seed)
    xt, yt = read_encoded(pre, "test")
    info = {"test_accuracy": accuracy(clf, xt[yt >= 0], yt[yt >= 0]), "train_rows": int(keep.sum()),
            "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1)}
    tmp = path.with_name(f".{CLASSIFIER_FILE}.part")
    torch.save({"state_dict": clf.state_dict(), "fingerprint": manifest["fingerprint"], "epochs": epochs,
                "info": json.dumps(info)}, tmp)
    tmp.replace(path)
    log(f"[evaluate] classifier test accuracy {info['test_accuracy']:.4f} ({info['seconds']}s)")
    return clf, info


def _split_key(manifest: dict) -> tuple:
    """Same input files, same validation and test splits: the same real training images."""
    return (tuple(i["sha256"] for i in manifest["inputs"]), manifest["splits"]["validation"],
            manifest["splits"]["test"], tuple(manifest["image_shape"]))


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets a and b (Heusel et al. 2017)."""
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a singular product is handled just below
        covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():  # near-singular product: nudge both covariances
        eps = np.eye(len(s1)) * 1e-6
        covmean = linalg.sqrtm((s1 + eps) @ (s2 + eps))
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def fid(clf: Classifier, real: np.ndarray, fake: np.ndarray) -> float:
    return frechet_distance(predict(clf, real)[0].astype(np.float64), predict(clf, fake)[0].astype(np.float64))


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------
def grid_png(images: np.ndarray, path: Path, ncols: int = 10, scale: int = 2, pad: int = 2) -> Path:
    """uint8 images (N, S, S) -> one PNG grid, ``ncols`` per row, scaled up for a person to look at."""
    from PIL import Image

    n, s = len(images), images.shape[1]
    nrows = max(1, math.ceil(n / ncols))
    canvas = np.full((nrows * (s + pad) + pad, ncols * (s + pad) + pad), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, ncols)
        canvas[pad + r * (s + pad): pad + r * (s + pad) + s, pad + c * (s + pad): pad + c * (s + pad) + s] = im
    img = Image.fromarray(canvas, "L")
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return Path(path)


MAX_GRID_ROWS = 20  # classes shown in a per-class grid; a set with more shows an evenly spaced sample


def shown_classes(k: int, max_rows: int = MAX_GRID_ROWS) -> np.ndarray:
    """The classes a per-class grid shows, one row each: all of them, or ``max_rows`` evenly
    spaced ones (first and last included) when there are more."""
    if k <= max_rows:
        return np.arange(k)
    return np.unique(np.rint(np.linspace(0, k - 1, max_rows)).astype(np.int64))


def class_grid(model, transformer, per_class: int, seed: int, clf: Classifier | None = None) -> np.ndarray:
    """Images (K * per_class, S, S), one row per class: drawn with that condition when the model
    is conditional, else unconditional samples sorted into rows by the classifier's prediction."""
    g = torch.Generator().manual_seed(seed)
    k = transformer.num_classes
    if getattr(model, "k", 0):
        labels = torch.from_numpy(shown_classes(k)).repeat_interleave(per_class)
        return transformer.pixels(model.sample(len(labels), generator=g, labels=labels).numpy())
    x = model.sample(max(per_class * k * 6, 200), generator=g).numpy()
    if clf is None or not k:
        return transformer.pixels(x[:per_class * max(k, 1)])
    pred = predict(clf, x)[1]
    rows = []
    for c in shown_classes(k):
        pick = x[pred == c][:per_class]
        pick = np.concatenate([pick, np.zeros((per_class - len(pick), x.shape[1]), np.float32)])  # blanks
        rows.append(pick)
    return transformer.pixels(np.concatenate(rows))


_REAL_FEATURES: dict[str, np.ndarray] = {}


def log_epoch_images(client, loop_cfg: dict, model, transformer, epoch: int, n_fid: int = 2000) -> None:
    """Rank 0, end of each epoch: a sample grid (fixed seed; a conditional model's has one row of
    10 per class, see ``class_grid``) and, when the pipeline's classifier exists, FID on
    ``n_fid`` samples against the real test split."""
    from gen_pipeline.images import read_encoded

    run_id = loop_cfg["mlflow_run_id"]
    pre = Path(loop_cfg["train_path"]).parent.parent
    with tempfile.TemporaryDirectory() as d:
        if getattr(model, "k", 0):  # one row of 10 per class, as class_grid lays it out
            labels = torch.from_numpy(shown_classes(transformer.num_classes)).repeat_interleave(10)
            x = model.sample(len(labels), generator=torch.Generator().manual_seed(0), labels=labels)
            images = transformer.pixels(x.cpu().numpy())
        else:
            images = transformer.pixels(model.sample(100, generator=torch.Generator().manual_seed(0)).cpu().numpy())
        client.log_artifact(run_id, str(grid_png(images, Path(d) / f"epoch_{epoch:03d}.png")), "samples")
    path = pre / CLASSIFIER_FILE
    if not path.is_file():
        return
    d = torch.load(path, map_location="cpu", weights_only=True)
    clf = Classifier(transformer.size, transformer.num_classes)
    clf.load_state_dict(d["state_dict"])
    clf.eval()
    key = str(pre)
    if key not in _REAL_FEATURES:
        x, _ = read_encoded(pre, "test", limit=n_fid)
        _REAL_FEATURES[key] = predict(clf, x)[0].astype(np.float64)
    fake = model.sample(n_fid, generator=torch.Generator().manual_seed(1)).cpu().numpy()
    value = frechet_distance(_REAL_FEATURES[key], predict(clf, fake)[0].astype(np.float64))
    client.log_metric(run_id, "fid_2k", value, step=epoch)


# ---------------------------------------------------------------------------------------------
# The evaluation report and the gate
# ---------------------------------------------------------------------------------------------
def image_report(bundle, preprocess_dir: Path, n: int | None, seed: int, classifier_epochs: int,
                 log=None) -> tuple[dict[str, float], Classifier]:
    """FID, conditional accuracy, test ELBO (VAE) of a bundle against the real test split."""
    from gen_pipeline.images import read_encoded

    clf, info = ensure_classifier(preprocess_dir, classifier_epochs, log=log)
    model, tr = bundle.model, bundle.transformer
    from gen_pipeline.image_score import normal_classes

    x, y = read_encoded(preprocess_dir, "test")
    normal = normal_classes(bundle.manifest)
    if 0 < len(normal) < tr.num_classes:  # a one-class model is compared with its own classes only
        x, y = x[np.isin(y, normal)], y[np.isin(y, normal)]
    n = n or len(x)
    g = torch.Generator().manual_seed(seed)
    fake = model.sample(n, generator=g).numpy()
    metrics = {"fid": fid(clf, x, fake), "classifier_test_accuracy": info["test_accuracy"],
               "fid_real_halves": fid(clf, x[: len(x) // 2], x[len(x) // 2:])}  # the floor on this split
    if getattr(model, "k", 0):
        labels = torch.arange(n) % tr.num_classes
        cond = model.sample(n, generator=torch.Generator().manual_seed(seed + 1), labels=labels).numpy()
        hit = predict(clf, cond)[1] == labels.numpy()
        metrics["conditional_accuracy"] = float(hit.mean())
        for c in range(tr.num_classes):
            metrics[f"conditional_accuracy_{c}"] = float(hit[labels.numpy() == c].mean())
    if hasattr(model, "elbo"):
        gen = torch.Generator().manual_seed(seed + 2)
        elbo = torch.cat([model.elbo(torch.from_numpy(x[i:i + 1000]), generator=gen)
                          for i in range(0, len(x), 1000)]).double()
        nats = float(-elbo.mean())
        metrics["test_neg_elbo_nats"] = nats
        metrics["test_bits_per_dim"] = nats / (tr.image_dim * math.log(2))
    return metrics, clf


def image_gate(candidate: dict[str, float], champion: dict[str, float] | None,
               max_fid: float | None) -> tuple[bool, str]:
    """Lower FID is better: promote when under ``max_fid`` (if set) and below the champion's."""
    value = candidate["fid"]
    if max_fid is not None and value > max_fid:
        return False, f"fid={value:.3f} is above the configured maximum {max_fid:.3f}"
    if champion is None:
        return True, f"fid={value:.3f} passes and there is no champion yet"
    if value < champion["fid"]:
        return True, f"fid={value:.3f} beats the champion's {champion['fid']:.3f}"
    return False, f"fid={value:.3f} does not beat the champion's {champion['fid']:.3f}"


def stage_evaluate_images(cfg, rt, preprocess_dir: Path) -> dict:
    """evaluate for image models: report on the candidate's run, grids, gate, ``champion`` alias."""
    from gen_pipeline.registry import CANDIDATE, CHAMPION, alias_version, resolve

    mlflow = rt.mlflow(cfg.name)
    client = mlflow.MlflowClient()
    cand_mv, cand = resolve(f"models:/{cfg.model_name}@{CANDIDATE}")
    e = cfg.evaluate
    metrics, clf = image_report(cand.bundle, preprocess_dir, e.num_rows, e.seed, e.classifier_epochs)
    champ_mv = alias_version(cfg.model_name, CHAMPION)
    champ_metrics = None
    if champ_mv is not None and champ_mv.version != cand_mv.version:
        _, champ = resolve(f"models:/{cfg.model_name}/{champ_mv.version}")  # same rows, same seed
        champ_metrics, _ = image_report(champ.bundle, preprocess_dir, e.num_rows, e.seed, e.classifier_epochs)
    promote, reason = image_gate(metrics, champ_metrics, e.max_fid)
    if champ_mv is not None and champ_mv.version == cand_mv.version:
        promote, reason = False, "the candidate is already the champion"
    for k, v in metrics.items():
        client.log_metric(cand_mv.run_id, f"eval_{k}", v)
    with tempfile.TemporaryDirectory() as d:
        images = class_grid(cand.bundle.model, cand.bundle.transformer, 10, e.seed, clf)
        client.log_artifact(cand_mv.run_id, str(grid_png(images, Path(d) / "final_grid_per_class.png")), "evaluation")
        (Path(d) / "report.json").write_text(json.dumps(
            {"metrics": metrics, "champion_metrics": champ_metrics, "promoted": promote, "reason": reason,
             "classes": cand.bundle.transformer.classes}, indent=1))
        client.log_artifact(cand_mv.run_id, str(Path(d) / "report.json"), "evaluation")
    for k, v in {"gate_decision": "promoted" if promote else "rejected", "gate_reason": reason,
                 "fid": f"{metrics['fid']:.6f}"}.items():
        client.set_model_version_tag(cfg.model_name, cand_mv.version, k, v)
    if promote:
        client.set_registered_model_alias(cfg.model_name, CHAMPION, cand_mv.version)
    shown = " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if not k.startswith("conditional_accuracy_"))
    print(f"[evaluate] {cfg.model_name} v{cand_mv.version}: {shown}")
    print(f"[evaluate] gate: {'PROMOTED to @champion' if promote else 'not promoted'} ({reason})")
    return {"version": cand_mv.version, "promoted": promote, "reason": reason, **metrics}


def preview_grid(out: Path, transformer, n: int = 100, per_class: int = 10, scan: int = 20_000) -> Path:
    """``_preview.png`` beside the generated Parquet. Labelled images: one row per class (up to
    ``MAX_GRID_ROWS`` classes, evenly spaced when there are more), the first ``per_class``
    images of that class among the first ``scan`` rows, a short row left blank, so a model
    that draws one shape for every class shows it at a glance. Unlabelled: the first ``n``
    rows, 10 per row."""
    import pyarrow.dataset as ds

    side = transformer.size
    table = ds.dataset(Path(out), format="parquet").head(scan if transformer.num_classes else n,
                                                         columns=["image", "label"])
    images = np.frombuffer(b"".join(table.column("image").to_pylist()), np.uint8).reshape(-1, side, side)
    labels = table.column("label").to_numpy(zero_copy_only=False)
    labels = np.where(np.isnan(labels.astype(np.float64)), -1, labels).astype(np.int64)
    if not transformer.num_classes or (labels < 0).all():
        return grid_png(images[:n], Path(out) / "_preview.png")
    rows = []
    for c in shown_classes(transformer.num_classes):
        pick = images[labels == c][:per_class]
        rows.append(np.concatenate([pick, np.full((per_class - len(pick), side, side), 255, np.uint8)]))
    return grid_png(np.concatenate(rows), Path(out) / "_preview.png", ncols=per_class)
