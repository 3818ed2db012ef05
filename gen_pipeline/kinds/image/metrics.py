"""Evaluating image models: the pipeline's own classifier, FID on its features, conditional
accuracy, test ELBO in nats and bits per dimension, and the trivial baselines beside them.

Nothing is downloaded: FID (Heusel et al. 2017) is computed on the penultimate features of a
small CNN the pipeline trains on the real training split (cached beside the preprocess output as
``classifier.pt``), not on Inception features, so its values compare across our runs, not with
published Inception FIDs.
"""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from gen_pipeline.errors import PipelineError
from gen_pipeline.layout import CLASSIFIER_FILE, PreprocessOutput
from gen_pipeline.spans import image_hw

FEATURE_DIM = 128


class Classifier(nn.Module):
    """A small CNN: two conv blocks, a 128-d feature layer (FID's features), a linear head.
    ``side``: S (S x S) or (H, W), each side >= 4 (the pools floor: 30 -> 15 -> 7), and C = 1
    or 3 channel planes."""

    def __init__(self, side: int | tuple[int, int], k: int, channels: int = 1):
        super().__init__()
        self.side, self.k, self.channels = side, k, channels
        self.height, self.width = image_hw(side)
        self.image_dim = channels * self.height * self.width
        self.body = nn.Sequential(
            nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (B, 32, H/2, W/2)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 64, H/4, W/4)
            nn.Flatten(), nn.Linear(64 * (self.height // 4) * (self.width // 4), FEATURE_DIM), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(FEATURE_DIM, k))

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.body(pixels.reshape(-1, self.channels, self.height, self.width))  # (B, 128)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))  # (B, K) logits


def train_classifier(x: np.ndarray, y: np.ndarray, side: int | tuple[int, int], k: int, epochs: int,
                     seed: int = 0, batch_size: int = 128, lr: float = 1e-3, channels: int = 1) -> Classifier:
    """Fit the classifier on pixels ``x`` (N, C*H*W) in [0, 1] and labels ``y`` (N,); ``side``: S or (H, W)."""
    torch.manual_seed(seed)
    clf = Classifier(side, k, channels)
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    d = clf.image_dim
    xt, yt = torch.from_numpy(np.ascontiguousarray(x[:, :d], dtype=np.float32)), torch.from_numpy(y).long()
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
    """(features (N, 128), predicted class (N,)) for pixels (N, >= C*H*W)."""
    x = torch.as_tensor(x, dtype=torch.float32)[:, :clf.image_dim]
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


def ensure_classifier(data: PreprocessOutput, epochs: int, seed: int = 0, log=None) -> tuple[Classifier, dict]:
    """The pipeline's classifier for this preprocess output: trained once on the real train split
    and cached as ``classifier.pt`` (tensors only) beside it; retrained when the data changed."""
    log = log or (lambda msg: print(msg, flush=True))
    pre = data.root
    manifest = data.manifest
    channels, side, k = manifest["image_shape"][0], tuple(manifest["image_shape"][1:]), len(manifest["classes"])
    if k < 2:
        raise PipelineError(f"{pre}: FID and conditional accuracy need a labelled image set (found {k} classes)")
    path = data.classifier_path
    # Reuse one trained on the same images and split by another run (another model, or a one-class
    # run whose train split it could not learn every class from): it is the same yardstick.
    siblings = [p for p in sorted(pre.parents[1].glob(f"*/preprocess/{CLASSIFIER_FILE}")) if p != path]
    for candidate in [path, *siblings]:
        if not candidate.is_file():
            continue
        other = PreprocessOutput(candidate.parent).manifest
        # (not one trained on a share of the train split: data.train_fraction < 1)
        same = other["fingerprint"] == manifest["fingerprint"] or (
            _split_key(other) == _split_key(manifest) and not other.get("rows_excluded")
            and other.get("train_fraction", 1.0) >= 1.0)
        d = torch.load(candidate, map_location="cpu", weights_only=True)
        if same and d["fingerprint"] == other["fingerprint"] and int(d["epochs"]) == epochs:
            clf = Classifier(side, k, channels)
            clf.load_state_dict(d["state_dict"])
            clf.eval()
            if candidate != path:
                torch.save({**d, "fingerprint": manifest["fingerprint"]}, path)
                log(f"[evaluate] reusing the classifier of {candidate.parent} (same images and split)")
            return clf, json.loads(d["info"])
    t0 = time.perf_counter()
    x, y = data.read_encoded("train")
    keep = y >= 0
    if manifest.get("rows_excluded"):
        # train_where left out some classes (one-class anomaly runs): FID still needs a classifier
        # that knows every class, so it learns from the validation split's images too.
        xv, yv = data.read_encoded("validation")
        x, y, keep = np.concatenate([x, xv]), np.concatenate([y, yv]), np.concatenate([keep, yv >= 0])
    log(f"[evaluate] training the pipeline's classifier on {int(keep.sum())} real images ({epochs} epochs)")
    clf = train_classifier(x[keep], y[keep], side, k, epochs, seed, channels=channels)
    xt, yt = data.read_encoded("test")
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
    return (tuple((i["path"], i.get("sha256", i.get("bytes"))) for i in manifest["inputs"]), manifest["splits"]["validation"],
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
# The evaluation report
# ---------------------------------------------------------------------------------------------
def classifier_for(data: PreprocessOutput, transformer) -> Classifier | None:
    """The cached classifier of this preprocess output, if ``ensure_classifier`` trained one."""
    if not data.classifier_path.is_file():
        return None
    d = torch.load(data.classifier_path, map_location="cpu", weights_only=True)
    clf = Classifier(transformer.size, transformer.num_classes, transformer.channels)
    clf.load_state_dict(d["state_dict"])
    clf.eval()
    return clf


def pixel_marginals(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` images whose every pixel is drawn on its own from that pixel's values in ``x``: the
    trivial baseline an unconditional model must beat on FID."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(x), size=(n, x.shape[1]))
    return x[rows, np.arange(x.shape[1])[None, :]]


def image_report(bundle, data: PreprocessOutput, n: int | None, seed: int, classifier_epochs: int,
                 can_score: bool, log=None) -> tuple[dict[str, float], Classifier]:
    """FID, conditional accuracy, test ELBO (VAE) of a bundle against the real test split, and
    the trivial baseline beside them (pixel marginals' FID, chance accuracy)."""
    from gen_pipeline.kinds.image.scoring import normal_classes

    clf, info = ensure_classifier(data, classifier_epochs, log=log)
    model, tr = bundle.model, bundle.transformer
    x, y = data.read_encoded("test")
    normal = normal_classes(bundle.manifest)
    if 0 < len(normal) < tr.num_classes:  # a one-class model is compared with its own classes only
        x, y = x[np.isin(y, normal)], y[np.isin(y, normal)]
    n = n or len(x)
    g = torch.Generator().manual_seed(seed)
    fake = model.sample(n, generator=g).numpy()
    metrics = {"fid": fid(clf, x, fake), "classifier_test_accuracy": info["test_accuracy"],
               "fid_real_halves": fid(clf, x[: len(x) // 2], x[len(x) // 2:]),  # the floor on this split
               "baseline_pixel_marginals_fid": fid(clf, x, pixel_marginals(x, n, seed))}
    if model.conditional:
        labels = torch.arange(n) % tr.num_classes
        cond = model.sample(n, generator=torch.Generator().manual_seed(seed + 1),
                            fixed={tr.label_start: labels}).numpy()
        hit = predict(clf, cond)[1] == labels.numpy()
        metrics["conditional_accuracy"] = float(hit.mean())
        metrics["baseline_chance_accuracy"] = 1.0 / tr.num_classes
        for c in range(tr.num_classes):
            metrics[f"conditional_accuracy_{c}"] = float(hit[labels.numpy() == c].mean())
    if can_score:
        gen = torch.Generator().manual_seed(seed + 2)
        elbo = torch.cat([model.elbo(torch.from_numpy(x[i:i + 1000]), generator=gen)
                          for i in range(0, len(x), 1000)]).double()
        nats = float(-elbo.mean())
        metrics["test_neg_elbo_nats"] = nats
        metrics["test_bits_per_dim"] = nats / (tr.image_dim * math.log(2))
    return metrics, clf
