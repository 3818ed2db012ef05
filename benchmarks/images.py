"""Fashion-MNIST figures, side by side in one run, as JSON (recorded in benchmarks/RESULTS.md).

Run after the pipeline stages of configs/fashion_dcgan.yaml, fashion_cvae.yaml and
fashion_vae_anomaly.yaml (see README, "Images") into one work directory:

    .venv/bin/python benchmarks/images.py --work-dir work/images

Prints: FID per epoch (rank 0's ``fid_2k``) and the evaluate report of both models; one-class
anomaly ROC-AUC of our VAE's score next to a PCA reconstruction-error baseline on the same test
images; and the augmentation benchmark: the pipeline's classifier trained on a reduced real
training set (``--per-class`` images per class) with and without class-conditional generated
images (all of them, and only those the real-only classifier assigns to their requested class),
test accuracy for each, and the real-only accuracy at two more seeds for the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fid_history(client, name: str) -> dict:
    from gen_pipeline.registry import alias_version

    mv = alias_version(name, "champion") or alias_version(name, "candidate")
    if mv is None:
        return {}
    run = client.get_run(mv.run_id)
    hist = [round(m.value, 2) for m in sorted(client.get_metric_history(mv.run_id, "fid_2k"), key=lambda m: m.step)]
    evals = {k[5:]: round(v, 4) for k, v in run.data.metrics.items()
             if k.startswith("eval_") and not k.startswith("eval_conditional_accuracy_")}
    return {"version": mv.version, "fid_2k_per_epoch": hist, "evaluate": evals}


def anomaly(work: Path, components: int) -> dict:
    """Our VAE's ROC-AUC (from score's output) beside PCA reconstruction error on the same images."""
    import pyarrow.parquet as pq
    from sklearn.decomposition import PCA
    from sklearn.metrics import roc_auc_score

    from gen_pipeline.images import read_encoded

    scored = pq.read_table(work / "outputs/fashion_vae_anomaly/scored").to_pandas()
    scored = scored[scored["score"].notna()].sort_values("index")
    ours = roc_auc_score(scored["anomaly"], scored["score"])
    plain = roc_auc_score(scored["anomaly"], scored["neg_elbo"]) if "neg_elbo" in scored else None
    pre = work / "runs/fashion_vae_anomaly/preprocess"
    x_train, y_train = read_encoded(pre, "train")
    x_test, y_test = read_encoded(pre, "test")
    pca = PCA(n_components=components, random_state=0).fit(x_train[:, :784])
    recon = pca.inverse_transform(pca.transform(x_test[:, :784]))
    err = ((x_test[:, :784] - recon) ** 2).sum(1)
    normal = sorted(set(y_train.tolist()))
    baseline = roc_auc_score(~np.isin(y_test, normal), err)
    return {"normal_classes": normal, "test_images": int(len(scored)), "roc_auc_vae_score": round(ours, 4),
            "roc_auc_vae_plain_neg_elbo": None if plain is None else round(plain, 4),
            "roc_auc_pca_reconstruction": round(baseline, 4), "pca_components": components}


def augmentation(work: Path, per_class: int, synth_per_class: int, epochs: int, models: list[str]) -> dict:
    """Classifier on ``per_class`` real images per class, alone and with generated images added."""
    import torch

    from gen_pipeline.image_eval import accuracy, predict, train_classifier
    from gen_pipeline.images import read_encoded
    from gen_pipeline.registry import resolve

    pre = work / "runs/fashion_dcgan/preprocess"
    x, y = read_encoded(pre, "train")
    xt, yt = read_encoded(pre, "test")
    rng = np.random.default_rng(0)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in range(10)])
    xr, yr = x[pick], y[pick]
    out = {"real_per_class": per_class, "synthetic_per_class": synth_per_class, "epochs": epochs,
           "test_images": int(len(xt))}
    t0 = time.perf_counter()
    real_only = train_classifier(xr, yr, 28, 10, epochs, seed=0)
    out["accuracy_real_only"] = round(accuracy(real_only, xt, yt), 4)
    # The retrain noise the differences below are judged against: the same data, other seeds.
    out["accuracy_real_only_seeds_1_2"] = [round(accuracy(train_classifier(xr, yr, 28, 10, epochs, seed=s), xt, yt), 4)
                                           for s in (1, 2)]
    for name in models:
        _, pyfunc = resolve(f"models:/{name}@champion")
        labels = torch.arange(10).repeat_interleave(synth_per_class)
        xs = pyfunc.bundle.model.sample(len(labels), generator=torch.Generator().manual_seed(0), labels=labels).numpy()
        # Pixels round-trip through uint8, exactly as generate writes them.
        xs[:, :784] = np.rint(xs[:, :784] * 255) / 255
        ys = labels.numpy()
        clf = train_classifier(np.concatenate([xr, xs]), np.concatenate([yr, ys]), 28, 10, epochs, seed=0)
        out[f"accuracy_real_plus_{name}"] = round(accuracy(clf, xt, yt), 4)
        # Filtered: only the generated images the real-only classifier assigns to their requested class.
        keep = predict(real_only, xs)[1] == ys
        clf = train_classifier(np.concatenate([xr, xs[keep]]), np.concatenate([yr, ys[keep]]), 28, 10, epochs, seed=0)
        out[f"accuracy_real_plus_{name}_filtered"] = round(accuracy(clf, xt, yt), 4)
        out[f"kept_share_{name}_filtered"] = round(float(keep.mean()), 4)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", default="work/images")
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--synthetic-per-class", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--pca-components", type=int, default=16)
    p.add_argument("--skip", action="append", default=[], choices=["fid", "anomaly", "augmentation"])
    args = p.parse_args()
    work = Path(args.work_dir).resolve()
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{work / 'mlflow.db'}")
    import mlflow
    import torch

    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    client = mlflow.MlflowClient()
    result: dict = {}
    if "fid" not in args.skip:
        result["models"] = {n: _fid_history(client, n) for n in ("fashion_dcgan", "fashion_cvae", "fashion_vae_anomaly")}
        gen = work / "outputs/fashion_dcgan/generated/_lineage.json"
        if gen.is_file():
            lin = json.loads(gen.read_text())
            result["generate"] = {k: lin[k] for k in ("rows", "seconds", "rows_per_s", "partitions")}
    if "anomaly" not in args.skip:
        result["anomaly"] = anomaly(work, args.pca_components)
    if "augmentation" not in args.skip:
        result["augmentation"] = augmentation(work, args.per_class, args.synthetic_per_class, args.epochs,
                                              ["fashion_dcgan", "fashion_cvae"])
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
