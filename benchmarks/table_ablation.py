"""One table family trained in-process on Adult's official split, for comparing variants quickly.

    .venv/bin/python benchmarks/table_ablation.py --epochs 60 --discrete 128 \
        --set latent_dim=16 'decoder_hidden_dims=[256]'

Needs the preprocess output of ``configs/adult_tvae.yaml`` (``gen-pipeline preprocess --config
configs/adult_tvae.yaml --work-dir W``; pass ``--preprocess W/runs/adult_tvae/preprocess``). The
model (``--family``, default tvae_ar, with ``--set`` model fields) trains on the encoded train
split in this process (one thread by default, batches of 500, Adam), samples as many rows as the
train split holds and is judged by the pipeline's own functions against the real train split
and ``adult.test``: SDMetrics quality over all pairs, the pinned gradient-boosted detection and
train-on-synthetic AUC, the share of "Husband" among generated women (real: 0.009%), and each
column alone through the detector. ``--discrete N`` re-fits the VGM columns of whole numbers
with at most N distinct values as one point mass per value (``transform.discrete_values``)
and re-encodes the split; ``--quantile-rest Q`` with it puts the other numeric columns through
a Q-point quantile transform (what ``transform.continuous: quantile`` with
``transform.discrete_values`` fits in preprocess). ``--save FILE`` keeps the sampled rows.
Prints one JSON line. What the pipeline's train stage adds (Ray
Train, DDP over 2 workers, checkpoints) does not change these figures beyond seed noise.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    from gen_pipeline.config import ModelConfig
    from gen_pipeline.kinds.table.detection import balanced, gbt_detection_auc, gbt_metrics
    from gen_pipeline.kinds.table.fitting import fit_vgm
    from gen_pipeline.kinds.table.metrics import evaluation_view, sdmetrics_quality
    from gen_pipeline.kinds.table.transforms import TableTransformer
    from gen_pipeline.layout import PreprocessOutput
    from gen_pipeline.models import build_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--preprocess", type=Path, default=REPO / "work" / "runs" / "adult_tvae" / "preprocess")
    ap.add_argument("--family", default="tvae_ar")
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--discrete", type=int, default=0)
    ap.add_argument("--no-columns", action="store_true", help="skip the detector on each column alone")
    ap.add_argument("--save", type=Path, help="write the sampled rows to this Parquet file")
    ap.add_argument("--quantile-rest", type=int, default=0, metavar="Q",
                    help="with --discrete: columns that are not all point masses through a Q-point quantile transform")
    ap.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="model fields, e.g. latent_dim=16")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)

    pre = PreprocessOutput(a.preprocess)
    train, test = pre.read_clean("train"), pre.read_clean("test")
    spec = copy.deepcopy(pre.spec)
    if a.discrete:
        for col in spec["columns"]:
            if col.get("method") == "vgm":
                values = train[col["name"]].dropna().astype(float).to_numpy()
                col.update(fit_vgm(values, discrete_values=a.discrete))
                if a.quantile_rest and any(col["stds"]):
                    probs = np.linspace(0.0, 1.0, a.quantile_rest + 1)
                    col.update(method="quantile", probs=probs.tolist(), quantiles=np.quantile(values, probs).tolist())
    tr = TableTransformer(spec)
    x = torch.from_numpy(tr.transform(train)[0] if a.discrete else pre.read_encoded("train")[0])

    fields = {"family": a.family, "latent_dim": 128, "hidden_dims": (128, 128), "loss_factor": 2.0}
    fields.update({k: json.loads(v) for k, v in (kv.split("=", 1) for kv in a.set)})
    model = build_model(ModelConfig(**fields), tr.spans, x.shape[1])
    model.configure_optimizers(a.lr, a.weight_decay)
    g = torch.Generator().manual_seed(a.seed)
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - a.batch + 1, a.batch):
            model.train_step(x[perm[i:i + a.batch]])
        print(f"epoch {epoch + 1}/{a.epochs} {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
    train_s = time.perf_counter() - t0
    model.eval()
    t1 = time.perf_counter()
    synth = tr.inverse_transform(model.sample(len(train), torch.Generator().manual_seed(1)).numpy())
    sample_s = time.perf_counter() - t1

    if a.save:
        synth.to_parquet(a.save)
    schema, (train_v, test_v, synth_v) = evaluation_view(tr.schema, train, test, synth)
    quality = sdmetrics_quality(train_v, synth_v, schema)
    gbt = gbt_metrics(train_v, test_v, synth_v, schema, "income", 50_000, 0)
    real, fake = balanced(train_v, synth_v, 20_000, 0)
    alone = {c.name: round(gbt_detection_auc(real[[c.name]], fake[[c.name]],
                                             dataclasses.replace(schema, columns=(c,)), 0, folds=2), 3)
             for c in schema.columns} if not a.no_columns else {}
    women = synth[synth["sex"] == "Female"]
    print(json.dumps({"family": a.family, "set": a.set, "discrete": a.discrete, "epochs": a.epochs, "seed": a.seed,
                      "train_s": round(train_s), "sample_rows_per_s": round(len(train) / sample_s),
                      "quality_all_pairs": round(quality["quality_score_all_pairs"], 4),
                      "column_shapes": round(quality["column_shapes"], 4),
                      "pair_trends_all_pairs": round(quality["column_pair_trends_all_pairs"], 4),
                      "shape_each_column": {k[6:]: round(v, 4) for k, v in quality.items() if k.startswith("shape_")},
                      "detection_auc_gbt": round(gbt["detection_auc_gbt"], 4),
                      "tstr_auc_gbt": round(gbt["tstr_auc_gbt"], 4),
                      "husband_among_women": round(float((women["relationship"] == "Husband").mean()), 4),
                      "detection_auc_gbt_each_column_alone": alone}))


if __name__ == "__main__":
    main()
