"""Fashion-MNIST figures, side by side in one run, as JSON (recorded in benchmarks/RESULTS.md).

Run after the pipeline stages of configs/fashion_dcgan.yaml, fashion_cvae.yaml and
fashion_vae_anomaly.yaml (see README, "Images") into one work directory:

    .venv/bin/python benchmarks/images.py --work-dir work/images

Prints: FID per epoch (rank 0's ``fid_2k``) and the evaluate report of both models; one-class
anomaly ROC-AUC of our VAE's score next to a PCA reconstruction-error baseline on the same test
images; and the augmentation benchmark: the pipeline's classifier trained on a reduced real
training set (``--per-class`` images per class) with and without class-conditional generated
images (all of them, and only those the real-only classifier assigns to their requested class),
test accuracy for each, and the real-only accuracy at two more seeds for the noise; and the
small-data benchmark (``small_data``): each model trained on 100%, 10% and 1% of the training
images with its small-data remedies off (``before``) and on (``defaults``), or any named set
of model overrides (``--variant``), FID, conditional accuracy and train seconds for each:

    .venv/bin/python benchmarks/images.py --work-dir work/images --skip fid --skip anomaly \
        --skip augmentation --fractions 0.1 --variant before --variant defaults
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

    from gen_pipeline.layout import PreprocessOutput

    scored = pq.read_table(work / "outputs/fashion_vae_anomaly/scored").to_pandas()
    scored = scored[scored["score"].notna()].sort_values("index")
    ours = roc_auc_score(scored["anomaly"], scored["score"])
    plain = roc_auc_score(scored["anomaly"], scored["neg_elbo"]) if "neg_elbo" in scored else None
    pre = work / "runs/fashion_vae_anomaly/preprocess"
    x_train, y_train = PreprocessOutput(pre).read_encoded("train")
    x_test, y_test = PreprocessOutput(pre).read_encoded("test")
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

    from gen_pipeline.kinds.image.metrics import accuracy, predict, train_classifier
    from gen_pipeline.layout import PreprocessOutput
    from gen_pipeline.registry import resolve

    pre = work / "runs/fashion_dcgan/preprocess"
    x, y = PreprocessOutput(pre).read_encoded("train")
    xt, yt = PreprocessOutput(pre).read_encoded("test")
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
        xs = pyfunc.bundle.model.sample(len(labels), generator=torch.Generator().manual_seed(0), fixed={pyfunc.bundle.model.label_start: labels}).numpy()
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


# The remedies off: today's DCGAN / conv VAE before issue 19 (conv VAE: only ``upsample`` applies).
BEFORE = {"diff_augment": "none", "spectral_norm": False, "ema_decay": 0.0, "upsample": "transposed"}


def _variant(text: str) -> tuple[str, dict]:
    """``name:key=value,key=value`` (``before`` and ``defaults`` are built in) -> (name, overrides)."""
    import yaml

    if text == "before":
        return text, dict(BEFORE)
    if text == "defaults":
        return text, {}
    name, _, pairs = text.partition(":")
    return name, {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in pairs.split(",") if kv)}


def small_data(work: Path, fractions: list[float], configs: list[str], variants: list[str], seed: int,
               max_steps: int | None) -> list[dict]:
    """Each config x training share x remedy variant, trained in this process (no Spark/Ray) the way
    ``train`` sizes it: one worker with the global batch (``batch_size x num_workers``), epochs of
    ``gen_pipeline.training.driver.steps_per_epoch`` steps (``train.min_steps``). The share is a seeded
    subset of the full run's train split (a prefix of one permutation: 1% within 10% within
    100%). FID (10,000 samples) and conditional accuracy always on the classifier of the FULL
    train split and the official 10,000 test images, so the yardstick does not move."""
    import torch

    from gen_pipeline.config import load_config
    from gen_pipeline.kinds.image.metrics import ensure_classifier, fid, predict
    from gen_pipeline.kinds.image.transform import ImageTransformer
    from gen_pipeline.layout import PreprocessOutput
    from gen_pipeline.training.loaders import memory_source
    from gen_pipeline.models import build_model
    from gen_pipeline.kinds.image import IMAGE
    from gen_pipeline.training.driver import steps_per_epoch
    from gen_pipeline.training.loop import fit
    from gen_pipeline.training.shell import bf16_autocast

    rows = []
    for config in configs:
        cfg0 = load_config(config)
        pre = work / f"runs/{cfg0.name}/preprocess"
        clf, info = ensure_classifier(PreprocessOutput(pre), cfg0.evaluate.classifier_epochs)
        x, _ = PreprocessOutput(pre).read_encoded("train")
        xt, yt = PreprocessOutput(pre).read_encoded("test")
        tr = ImageTransformer(json.loads((pre / "transform_spec.json").read_text()))
        order = np.random.default_rng(seed).permutation(len(x))
        for fraction in fractions:
            part = torch.from_numpy(x[order[:max(1, int(round(fraction * len(x))))]])
            for text in variants:
                name, over = _variant(text)
                if cfg0.model.family == "conv_vae":
                    over = {k: v for k, v in over.items() if k == "upsample"}
                cfg = cfg0.model_copy(update={"model": cfg0.model.model_copy(update=over)})
                batch = cfg.train.batch_size * cfg.train.num_workers
                one = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_workers": 1,
                                                                                   "batch_size": batch})})
                steps, _ = steps_per_epoch(one, len(part), IMAGE.default_min_steps)
                epochs = cfg.train.epochs
                if max_steps and steps * epochs > max_steps:  # a quick look, said in the row
                    steps = max(1, max_steps // epochs)
                torch.manual_seed(cfg.train.seed)
                model = build_model(cfg.model, tr.spans, tr.output_dim)
                model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
                t0, c0 = time.perf_counter(), time.process_time()
                autocast = bf16_autocast(cfg, IMAGE, torch.device("cpu"))
                fit(model, memory_source(part, 0, 1, batch, cfg.train.seed), epochs=epochs, steps_per_epoch=steps,
                    batch_rows=batch, device=torch.device("cpu"), log=None, autocast=autocast, seed=cfg.train.seed)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                model.eval()
                fake = model.sample(10_000, generator=torch.Generator().manual_seed(1)).numpy()
                labels = torch.arange(10_000) % tr.num_classes
                cond = model.sample(10_000, generator=torch.Generator().manual_seed(2), fixed={model.label_start: labels}).numpy()
                row = {"config": cfg0.name, "train_share": fraction, "train_images": int(len(part)),
                       "variant": name, "overrides": over, "steps": steps * epochs, "batch": batch,
                       "precision": "bf16 autocast" if autocast else "float32",
                       "fid": round(fid(clf, xt, fake), 2),
                       "conditional_accuracy": round(float((predict(clf, cond)[1] == labels.numpy()).mean()), 4),
                       "train_seconds": round(wall, 1), "train_cpu_seconds": round(cpu, 1),
                       "classifier_test_accuracy": round(info["test_accuracy"], 4)}
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", default="work/images")
    p.add_argument("--per-class", type=int, default=500)
    p.add_argument("--synthetic-per-class", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--pca-components", type=int, default=16)
    p.add_argument("--skip", action="append", default=[], choices=["fid", "anomaly", "augmentation", "small"])
    p.add_argument("--fractions", default="1,0.1,0.01", help="small: shares of the train split")
    p.add_argument("--configs", default="configs/fashion_dcgan.yaml,configs/fashion_cvae.yaml",
                   help="small: configs whose preprocess output is in the work directory")
    p.add_argument("--variant", action="append", default=None,
                   help="small: 'before', 'defaults' or name:key=value,... model overrides (repeatable; "
                        "default: before and defaults)")
    p.add_argument("--max-steps", type=int, default=None, help="small: cap each run's steps (a quick look)")
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
    if "small" not in args.skip:
        result["small_data"] = small_data(work, [float(f) for f in args.fractions.split(",")],
                                          args.configs.split(","), args.variant or ["before", "defaults"], 0,
                                          args.max_steps)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
