"""The GPU training path, measured: samples/s and peak GPU memory per model; prints JSON.

    python benchmarks/gpu_train.py --adult PRE --fashion PRE [--ray] [--out results.json]

PRE is a preprocess folder (``transform_spec.json``, ``manifest.json``, ``encoded/train``) as our
Spark preprocess job writes it: Adult (configs/adult_tvae.yaml) and Fashion-MNIST
(configs/fashion_dcgan.yaml). Two parts, each in one run on one machine:

1. ``fit`` (the loop every Ray Train worker runs) for the four shipped models, on the GPU with
   bf16 autocast and in float32, side by side, plus the same model on this machine's CPU cores:
   samples/s after a warm-up epoch, peak GPU memory, and the last epoch's losses (bf16 must
   train like float32). Each table model also at 8x its config's batch, where a GPU earns its keep.
2. ``--ray``: our Ray Train shell (``train_on_ray``) with ``train.use_gpu=true`` on one worker,
   from tensors in GPU memory (loader ``memory``) and from Ray Data: the same (c)/(a) ratio as
   benchmarks/train_input.py, on the GPU, plus the image model through Ray Data.

``--device cpu`` runs part 1 without a GPU (the check that this script works at all).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CASES = (  # (config, data key, batch multipliers)
    ("adult_tvae", "adult", (1, 8)),
    ("adult_ctgan", "adult", (1, 8)),
    ("fashion_dcgan", "fashion", (1,)),
    ("fashion_cvae", "fashion", (1,)),
)


def fit_once(cfg, pre: Path, data, device, *, autocast: bool, epochs: int, steps: int) -> dict:
    import torch

    from gen_pipeline.kinds import kind_of
    from gen_pipeline.training.loaders import memory_source
    from gen_pipeline.models import build_model
    from gen_pipeline.training.loop import fit

    spec = json.loads((pre / "transform_spec.json").read_text())
    transformer = kind_of(spec=spec).transformer(spec)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg.model, transformer.spans, transformer.output_dim).to(device)
    model.configure_optimizers(cfg.train.lr, cfg.train.weight_decay)
    batches = memory_source(data.to(device), 0, 1, cfg.train.batch_size, cfg.train.seed)
    state = fit(model, batches, epochs=epochs, steps_per_epoch=steps, batch_rows=cfg.train.batch_size,
                device=device, autocast=autocast, seed=cfg.train.seed, log=None)
    last = state.history[-1]
    rates = [h["samples_per_s"] for h in state.history[1:]]  # the first epoch warms up (cuDNN, allocator)
    return {"samples_per_s": statistics.mean(rates), "step_ms": 1000 * cfg.train.batch_size / statistics.mean(rates),
            "gpu_peak_mib": last.get("gpu_peak_mib"),
            "last_epoch": {k: round(v, 4) for k, v in last.items() if k not in ("samples_per_s", "epoch_seconds",
                                                                              "gpu_peak_mib")}}


def part_fit(args, pres: dict[str, Path], results: dict) -> None:
    import torch

    from gen_pipeline.config import load_config
    from gen_pipeline.training.loaders import read_features

    device = torch.device(args.device)
    for name, key, multipliers in CASES:
        data = read_features(pres[key] / "encoded" / "train")
        for mult in multipliers:
            base = load_config(REPO / "configs" / f"{name}.yaml")
            cfg = base.model_copy(update={"train": base.train.model_copy(
                update={"batch_size": base.train.batch_size * mult})})
            steps = max(20, min(args.steps, data.shape[0] // cfg.train.batch_size))
            label = f"{name}_b{cfg.train.batch_size}"
            row: dict = {"rows": int(data.shape[0]), "batch": cfg.train.batch_size, "steps_per_epoch": steps}
            try:
                if device.type == "cuda":
                    row["bf16"] = fit_once(cfg, pres[key], data, device, autocast=True, epochs=args.epochs, steps=steps)
                    row["fp32"] = fit_once(cfg, pres[key], data, device, autocast=False, epochs=args.epochs, steps=steps)
                    row["bf16_over_fp32"] = row["bf16"]["samples_per_s"] / row["fp32"]["samples_per_s"]
                if not args.no_cpu:  # the same model on this machine's CPU cores, fewer steps
                    row["cpu_fp32"] = fit_once(cfg, pres[key], data, torch.device("cpu"), autocast=False, epochs=2,
                                               steps=max(10, steps // 10))
                    row["cpu_threads"] = torch.get_num_threads()
                    if "bf16" in row:
                        row["gpu_bf16_over_cpu"] = row["bf16"]["samples_per_s"] / row["cpu_fp32"]["samples_per_s"]
            except Exception:
                row["error"] = traceback.format_exc()
            results["fit"][label] = row
            print(f"[gpu] {label}: " + json.dumps({k: v for k, v in row.items() if k != "error"}, default=float),
                  flush=True)
            if "error" in row:
                print(row["error"], flush=True)
            dump(args, results)


def part_ray(args, pres: dict[str, Path], results: dict) -> None:
    import ray

    from benchmarks.train_input import tiled
    from gen_pipeline.config import load_config
    from gen_pipeline.runtime import Runtime
    from gen_pipeline.training.driver import train_on_ray

    work = Path(args.work_dir).resolve()
    rt = Runtime.from_env(work)
    # No dashboard: the GPU machine carries Ray without the `default` extra's packages.
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=True,
             object_store_memory=4 * 1024**3, logging_level="WARNING")
    adult = tiled(pres["adult"], work / "adult_x5", 5, 4)
    order = ("memory", "ray_data")
    runs = [("adult_tvae", adult, loader) for r in range(args.ray_repeats) for loader in order[::1 - 2 * (r % 2)]]
    if not args.no_ray_images:
        runs.append(("fashion_dcgan", pres["fashion"], "ray_data"))
    for i, (name, pre, loader) in enumerate(runs):
        base = load_config(REPO / "configs" / f"{name}.yaml")
        cfg = base.model_copy(update={"train": base.train.model_copy(update={
            "use_gpu": args.device == "cuda", "num_workers": 1, "loader": loader, "epochs": args.ray_epochs})})
        label = f"{name}_{loader}"
        try:
            t0 = time.perf_counter()
            res = train_on_ray(cfg, rt, pre, mlflow_run_id=None, run_name=f"gpu-{label}-{i}-{time.time_ns()}",
                               ray_storage=rt.work_dir / "ray_results")
            steady = [h["samples_per_s"] for h in res.history[1:]]
            entry = {"samples_per_s": statistics.mean(steady), "per_epoch": [round(h["samples_per_s"]) for h in
                                                                             res.history],
                     "gpu_peak_mib": res.history[-1].get("gpu_peak_mib"), "wall_s": time.perf_counter() - t0,
                     "last_epoch": {k: round(v, 4) for k, v in res.history[-1].items()}}
        except Exception:
            entry = {"error": traceback.format_exc()}
            print(entry["error"], flush=True)
        results["ray"].setdefault(label, []).append(entry)
        print(f"[gpu] ray {label}: {entry.get('samples_per_s', 'error')}", flush=True)
        dump(args, results)
    mem = [e["samples_per_s"] for e in results["ray"].get("adult_tvae_memory", []) if "samples_per_s" in e]
    rd = [e["samples_per_s"] for e in results["ray"].get("adult_tvae_ray_data", []) if "samples_per_s" in e]
    if mem and rd:
        results["ray"]["ratio_ray_data_over_memory_1w"] = statistics.mean(rd) / statistics.mean(mem)
    ray.shutdown()


def dump(args, results: dict) -> None:
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1, default=float))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--adult", required=True, help="Adult preprocess folder")
    parser.add_argument("--fashion", required=True, help="Fashion-MNIST preprocess folder")
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    parser.add_argument("--epochs", type=int, default=3, help="part 1: epochs per measurement (the first warms up)")
    parser.add_argument("--steps", type=int, default=200, help="part 1: at most this many steps per epoch")
    parser.add_argument("--ray", action="store_true", help="also part 2, Ray Train with use_gpu")
    parser.add_argument("--ray-epochs", type=int, default=3)
    parser.add_argument("--ray-repeats", type=int, default=2,
                        help="part 2: runs per loader, alternating (memory, Ray Data, Ray Data, memory, ...)")
    parser.add_argument("--no-ray-images", action="store_true", help="part 2 without the image model")
    parser.add_argument("--no-cpu", action="store_true", help="part 1 without the CPU measurement")
    parser.add_argument("--work-dir", default=str(REPO / "work" / "bench_gpu"))
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    from gen_pipeline.runtime import quiet_environment

    quiet_environment()
    torch.set_flush_denormal(True)
    pres = {"adult": Path(args.adult).resolve(), "fashion": Path(args.fashion).resolve()}
    results: dict = {"torch": torch.__version__, "cpu_cores": os.cpu_count(), "fit": {}, "ray": {}}
    if torch.cuda.is_available():
        results["gpu"] = torch.cuda.get_device_name(0)
    part_fit(args, pres, results)
    if args.ray:
        part_ray(args, pres, results)
    dump(args, results)
    print(json.dumps(results, indent=1, default=float))


if __name__ == "__main__":
    main()
