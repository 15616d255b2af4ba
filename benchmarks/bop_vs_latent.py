"""Bop, Bop2ndOrder and latent Adam over several seeds at equal epochs, with intervals.

    nice -n 10 python benchmarks/bop_vs_latent.py --models tfc,sfc --epochs 10 --seeds 0,1,2 \\
        --data-dir ../shared/data --out benchmarks/results/bop_vs_latent

Every (model, method, seed) is one `bnnflow train` run (the trainer's
``train(TrainConfig(...))``, one thread, its default hyperparameters), in its
own run folder under --runs. For each model the runs advance one epoch at a
time in turn: epoch 1 of every (seed, method), then epoch 2, ..., each call
resuming the run from its checkpoint, with the order of the methods rotated
from one round to the next. A change of load on a shared machine therefore
hits every method alike, and the seconds compared come from the same minutes.

A run's results (its per-epoch metrics and summary) are stored in
``OUT/per_run/<model>-<method>-s<seed>.json`` as soon as it finishes; ``--resume``
skips finished runs and continues the others from their checkpoints (also
from inside an epoch, where Ctrl-C stopped one). Each call trains a run up to
one epoch of the --epochs it is planned for (``TrainConfig.stop_after``), so
that a schedule (cosine, step) spans all of them, and a run ends bit for bit
as one uninterrupted ``bnnflow train`` would. ``--adopt RUN_DIR`` therefore
takes such a finished run, made beforehand with exactly these settings, in
place of training it again; the report marks the seconds of those runs,
measured at another time. Then it prints, per model and
method, the mean and standard deviation over seeds of the final and the best
test accuracy, the epochs and training seconds to a target accuracy, the flips
per epoch, and each method's difference from the baseline (latent Adam) in
final and best accuracy with a 95% Welch t interval over seeds; it writes
``OUT/results.md`` and ``OUT/curves.png`` (mean test accuracy per epoch with
+-1 standard deviation bands).
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from bnnflow.data import ImageDataset
from bnnflow.errors import BnnflowError
from bnnflow.runs import atomic_write_bytes, atomic_write_json, atomic_write_text, load_checkpoint
from bnnflow.training.optimizers import METHODS, SCHEDULES
from bnnflow.training.trainer import GENERIC_DEFAULTS, TrainConfig, train

BASELINE = "latent-adam"
# Accuracy whose reaching is timed, per model: about what both methods reach
# in 5 to 8 of 10 epochs (benchmarks/results/train_mnist*.md), so that the
# epochs and seconds to it separate fast from slow learners.
DEFAULT_TARGETS = {"tfc": 0.90, "sfc": 0.95, "lfc": 0.97}
CONFIDENCE = 0.95


# ---------------------------------------------------------------- statistics


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def welch_interval(a: list[float], b: list[float], confidence: float = CONFIDENCE) -> dict[str, float] | None:
    """mean(a) - mean(b) with its Welch t interval (unequal variances); None under 2 values a side.

    scipy's ``ttest_ind(equal_var=False)`` gives the Welch-Satterthwaite degrees
    of freedom and the interval. Where both samples are constant the standard
    error is 0 and scipy's interval is undefined: the interval is the point.
    """
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    if statistics.variance(a) == 0 and statistics.variance(b) == 0:
        return {"diff": diff, "low": diff, "high": diff, "df": float("nan")}
    res = stats.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return {"diff": diff, "low": float(ci.low), "high": float(ci.high), "df": float(res.df)}


def reach(history: list[dict[str, Any]], target: float) -> tuple[int, float] | None:
    """(first epoch whose test accuracy is >= target, training seconds up to its end); None if never."""
    seconds = 0.0
    for row in history:
        seconds += row["seconds"]
        if row["test_acc"] >= target:
            return row["epoch"], seconds
    return None


def describe_reach(results: list[dict[str, Any]], target: float) -> tuple[str, str]:
    """Table cells for epochs and seconds to ``target`` over seeds.

    Mean +- sd over the seeds that reached it; "(k/n seeds)" when not all did;
    "not reached" when none did.
    """
    hits = [r for r in (reach(res["history"], target) for res in results) if r is not None]
    if not hits:
        return "not reached", "not reached"
    note = "" if len(hits) == len(results) else f" ({len(hits)}/{len(results)} seeds)"
    ep, sec = mean_std([float(h[0]) for h in hits]), mean_std([h[1] for h in hits])
    return f"{ep[0]:.1f} ± {ep[1]:.1f}{note}", f"{sec[0]:.0f} ± {sec[1]:.0f}{note}"


# ------------------------------------------------------------------- running


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="tfc,sfc", help="comma-separated: tfc, sfc, lfc")
    p.add_argument("--methods", default=f"bop,bop2,{BASELINE}", help=f"comma-separated, from {list(METHODS)}")
    p.add_argument("--epochs", type=int, default=10, help="epochs of every run")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated integer seeds")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="MODEL=ACC",
        help="test accuracy (%%) to time, e.g. tfc=90 (repeatable; default "
        + ", ".join(f"{m}={100 * a:g}" for m, a in DEFAULT_TARGETS.items())
        + ")",
    )
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--schedule", choices=SCHEDULES, help="default: each network's recipe")
    p.add_argument("--dropout", type=float, help="default: each network's recipe, else its own rate")
    p.add_argument(
        "--augment", choices=list(ImageDataset.AUGMENTATIONS), help="default: each network's recipe"
    )
    p.add_argument("--limit-train", type=int, help="train on the first N images only (quick checks)")
    p.add_argument("--limit-test", type=int, help="test on the first N images only (quick checks)")
    p.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--runs", default="runs/bop_vs_latent", help="parent of the run folders (checkpoints)")
    p.add_argument("--out", default="benchmarks/results/bop_vs_latent", help="results folder")
    p.add_argument(
        "--adopt",
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="take a finished `bnnflow train` run with exactly this benchmark's settings as one of its runs "
        "(repeatable); its seconds were measured apart and are marked so",
    )
    p.add_argument("--resume", action="store_true", help="keep finished runs, continue the others")
    p.add_argument("--overwrite", action="store_true", help="start every run over")
    p.add_argument("--report-only", action="store_true", help="only tabulate the runs stored in --out")
    p.add_argument(
        "--partial",
        action="store_true",
        help="with --report-only: also tabulate unfinished runs from their checkpoints, every run "
        "of a model cut to the epochs all of its runs have",
    )
    args = p.parse_args(argv)
    args.models = _names(args.models, "--models")
    args.methods = _names(args.methods, "--methods")
    for m in args.methods:
        if m not in METHODS:
            raise BnnflowError(f"unknown method {m!r} in --methods; choose from {', '.join(METHODS)}")
    if BASELINE not in args.methods:
        raise BnnflowError(f"--methods must include the baseline {BASELINE!r}")
    try:
        args.seeds = [int(s) for s in _names(args.seeds, "--seeds")]
    except ValueError:
        raise BnnflowError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if len(set(args.seeds)) != len(args.seeds):
        raise BnnflowError("--seeds has a repeated seed")
    if args.epochs < 1:
        raise BnnflowError("--epochs must be at least 1")
    if args.adopt and args.report_only:
        raise BnnflowError("--adopt trains nothing but is not a report: leave out --report-only")
    if args.partial and not args.report_only:
        raise BnnflowError("--partial goes with --report-only")
    args.targets = _targets(args.target, args.models)
    return args


def _names(text: str, option: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise BnnflowError(f"{option} is empty")
    return names


def _targets(specs: list[str], models: list[str]) -> dict[str, float]:
    targets = {m: DEFAULT_TARGETS[m] for m in models if m in DEFAULT_TARGETS}
    for spec in specs:
        model, _, value = spec.partition("=")
        try:
            acc = float(value) / 100
        except ValueError:
            raise BnnflowError(f"--target wants MODEL=PERCENT, got {spec!r}") from None
        if not 0 < acc <= 1:
            raise BnnflowError(f"--target accuracy must be in (0, 100], got {spec!r}")
        targets[model.strip()] = acc
    missing = [m for m in models if m not in targets]
    if missing:
        raise BnnflowError(
            f"no default target accuracy for {', '.join(missing)}: pass --target MODEL=PERCENT"
        )
    return targets


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What a stored result must share with this command to be reused by --resume."""
    return {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "limit_train": args.limit_train,
        "limit_test": args.limit_test,
        "schedule": args.schedule,
        "dropout": args.dropout,
        "augment": args.augment,
    }


# Results stored before the recipes existed were trained with what is now spelled this way.
_BEFORE_RECIPES = {"schedule": "constant", "dropout": 0.2, "augment": "none"}


def config(args: argparse.Namespace, model: str, method: str, seed: int, epoch: int) -> TrainConfig:
    """The call that trains the run up to ``epoch``: the run is planned for --epochs, so that a
    schedule spans all of them, and this call stops after ``epoch`` (``stop_after``)."""
    return TrainConfig(
        model=model,
        dataset="mnist",
        method=method,
        epochs=args.epochs,
        stop_after=epoch,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        limit_train=args.limit_train,
        limit_test=args.limit_test,
        run_dir=str(Path(args.runs) / run_key(model, method, seed)),
        seed=seed,
        schedule=args.schedule,
        dropout=args.dropout,
        augment=args.augment,
        threads=1,
        progress=False,
    )


def run_key(model: str, method: str, seed: int) -> str:
    return f"{model}-{method}-s{seed}"


def result_path(args: argparse.Namespace, key: str) -> Path:
    return Path(args.out) / "per_run" / f"{key}.json"


def load_result(args: argparse.Namespace, key: str) -> dict[str, Any] | None:
    """A stored finished run, checked against this command's settings; None if absent."""
    path = result_path(args, key)
    if not path.exists():
        return None
    try:
        stored = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BnnflowError(f"unreadable result {path}: {exc}") from None
    if {**_BEFORE_RECIPES, **stored.get("settings", {})} != settings(args):
        raise BnnflowError(
            f"{path} was made with {stored.get('settings')}, this command has {settings(args)}: "
            "use another --out or --overwrite"
        )
    return stored


def epochs_done(args: argparse.Namespace, model: str, method: str, seed: int) -> int:
    """Whole epochs in the run folder's checkpoint (0 if none); the trainer finishes a cut epoch."""
    ckpt = Path(args.runs) / run_key(model, method, seed) / "checkpoint.pt"
    if not ckpt.exists():
        return 0
    epochs = int(load_checkpoint(ckpt)["epoch"])
    if epochs > args.epochs:
        raise BnnflowError(
            f"{ckpt} holds {epochs} epochs, more than --epochs {args.epochs}: use another --runs"
        )
    return epochs


# Settings that do not change what a run computes, and so may differ in an adopted run.
_ADOPT_IGNORED = (
    "run_dir",
    "data_dir",
    "download",
    "device",
    "threads",
    "resume",
    "overwrite",
    "checkpoint_every",
    "progress",
    "stop_after",
    "interrupt_after_steps",
)

# Settings a run saved before they existed lacks; such a run trained with these values.
_ADOPT_ABSENT_MEANS = {"label_smoothing": 0.0, "tau_schedule": "constant"}


def adopt(args: argparse.Namespace, run_dir: str) -> tuple[str, dict[str, Any]]:
    """A finished run made outside the benchmark, checked to be the run the benchmark would make."""
    ckpt = Path(run_dir) / "checkpoint.pt"
    if not ckpt.is_file():
        raise BnnflowError(f"--adopt {run_dir}: no checkpoint.pt there")
    payload = load_checkpoint(ckpt)
    stored = payload.get("config")
    if not isinstance(stored, dict) or not {"model", "method", "seed"} <= stored.keys():
        raise BnnflowError(f"--adopt {run_dir}: its checkpoint records no training settings")
    model, method, seed = stored["model"], stored["method"], stored["seed"]
    if model not in args.models or method not in args.methods or seed not in args.seeds:
        raise BnnflowError(
            f"--adopt {run_dir}: {model} / {method} / seed {seed} is not one of this command's runs"
        )
    wanted = asdict(config(args, model, method, seed, args.epochs).resolved())
    stored = {**_ADOPT_ABSENT_MEANS, **stored}
    differ = sorted(k for k in wanted if k not in _ADOPT_IGNORED and stored.get(k) != wanted[k])
    if differ:
        raise BnnflowError(
            f"--adopt {run_dir}: trained with other settings than this command's: "
            + ", ".join(f"{k} {stored.get(k)!r} (here {wanted[k]!r})" for k in differ)
        )
    if int(payload["epoch"]) != args.epochs or payload.get("batches_done"):
        raise BnnflowError(
            f"--adopt {run_dir}: has {payload['epoch']} of {args.epochs} epochs, not a finished run"
        )
    summary_path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    except (OSError, json.JSONDecodeError) as exc:
        raise BnnflowError(f"--adopt {run_dir}: unreadable summary.json: {exc}") from None
    result = {
        "settings": settings(args),
        "config": wanted,
        "summary": summary,
        "history": payload["history"],
        "adopted_from": str(Path(run_dir).resolve()),
    }
    key = run_key(model, method, seed)
    atomic_write_json(result_path(args, key), result)
    return key, result


def plan(args: argparse.Namespace) -> tuple[dict[str, dict], dict[tuple[str, str, int], int]]:
    """Finished results, and for each unfinished run the epochs already in its checkpoint."""
    done: dict[str, dict] = {}
    todo: dict[tuple[str, str, int], int] = {}
    for model in args.models:
        for method in args.methods:
            for seed in args.seeds:
                key = run_key(model, method, seed)
                stored = None if args.overwrite else load_result(args, key)
                if stored is not None:
                    done[key] = stored
                elif args.partial:
                    ckpt = Path(args.runs) / key / "checkpoint.pt"
                    if ckpt.exists():
                        payload = load_checkpoint(ckpt)
                        done[key] = {
                            "summary": None,
                            "history": payload["history"],
                            "config": payload.get("config"),
                        }
                elif not args.report_only:
                    todo[(model, method, seed)] = epochs_done(args, model, method, seed) if args.resume else 0
    if done and not (args.resume or args.report_only):
        raise BnnflowError(
            f"{Path(args.out) / 'per_run'} already holds {len(done)} finished runs: "
            "pass --resume to continue or --overwrite to start over"
        )
    return done, todo


def train_model(args: argparse.Namespace, model: str, todo: dict, done: dict) -> None:
    """Every unfinished run of ``model``, one epoch of each in turn (methods rotated per round)."""
    runs = [(method, seed) for seed in args.seeds for method in args.methods if (model, method, seed) in todo]
    for epoch in range(1, args.epochs + 1):
        shift = epoch % len(args.methods)
        order = args.methods[shift:] + args.methods[:shift]
        for seed in args.seeds:
            for method in order:
                key = run_key(model, method, seed)
                # At the last epoch a run whose checkpoint is complete but whose result was not
                # stored (stopped in between) is called once more: the trainer then only
                # writes its summary.
                if (method, seed) not in runs or key in done:
                    continue
                if todo[(model, method, seed)] >= epoch and epoch < args.epochs:
                    continue
                cfg = config(args, model, method, seed, epoch)
                cfg.resume = todo[(model, method, seed)] > 0 or epoch > 1
                cfg.overwrite = not cfg.resume
                print(f"== {model} / {method} / seed {seed}: epoch {epoch} -> {cfg.run_dir}", flush=True)
                summary = train(cfg)
                todo[(model, method, seed)] = epoch
                if epoch == args.epochs:
                    done[key] = store_result(args, cfg, summary)


def store_result(args: argparse.Namespace, cfg: TrainConfig, summary: dict[str, Any]) -> dict[str, Any]:
    payload = load_checkpoint(Path(cfg.run_dir) / "checkpoint.pt")
    result = {
        "settings": settings(args),
        # the run's settings as trained (cfg here resumes, and so leaves the recipe to the checkpoint)
        "config": payload["config"],
        "summary": summary,
        "history": payload["history"],
    }
    atomic_write_json(result_path(args, run_key(cfg.model, cfg.method, cfg.seed)), result)
    return result


# ---------------------------------------------------------------- reporting


def grouped(args: argparse.Namespace, done: dict[str, dict]) -> dict[tuple[str, str], list[dict]]:
    """Results per (model, method), in seed order; a group with none is left out.

    Every run of a model is cut to the epochs that all of its runs have (only
    unfinished runs, tabulated with --partial, make that fewer than --epochs).
    """
    groups: dict[tuple[str, str], list[dict]] = {}
    for model in args.models:
        keys = [run_key(model, m, s) for m in args.methods for s in args.seeds]
        common = min((len(done[k]["history"]) for k in keys if k in done), default=0)
        if common == 0:
            continue
        for method in args.methods:
            res = [done[k] for k in (run_key(model, method, s) for s in args.seeds) if k in done]
            if res:
                groups[(model, method)] = [{**r, "history": r["history"][:common]} for r in res]
    return groups


def final_acc(result: dict[str, Any]) -> float:
    return result["history"][-1]["test_acc"]


def best_acc(result: dict[str, Any]) -> float:
    return max(row["test_acc"] for row in result["history"])


def _pm(values: list[float], scale: float = 1.0, digits: int = 2) -> str:
    mean, sd = mean_std([scale * v for v in values])
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _interval(a: list[float], b: list[float]) -> str:
    w = welch_interval([100 * v for v in a], [100 * v for v in b])
    if w is None:
        return "needs 2 seeds a side"
    return f"{w['diff']:+.2f} [{w['low']:+.2f}, {w['high']:+.2f}]"


def summary_table(args: argparse.Namespace, groups: dict) -> list[str]:
    lines = [
        "| model | method | seeds | epochs | final acc % | best acc % | epochs to target | s to target "
        "| flips/epoch | s/epoch | bytes/binary weight |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (model, method), res in groups.items():
        target = args.targets[model]
        epochs, seconds = describe_reach(res, target)
        flips = [statistics.fmean(row["flips"] for row in r["history"]) for r in res]
        sec = [statistics.median(row["seconds"] for row in r["history"]) for r in res]
        state = [r["summary"]["bytes_per_binary_weight"] for r in res if r["summary"]]
        adopted = " †" if any("adopted_from" in r for r in res) else ""  # timed apart: see the note
        lines.append(
            f"| {model} | {method} | {len(res)} | {len(res[0]['history'])} "
            f"| {_pm([final_acc(r) for r in res], 100)} | {_pm([best_acc(r) for r in res], 100)} "
            f"| {epochs} | {seconds}{adopted} | {_pm(flips, digits=0)} | {_pm(sec, digits=1)}{adopted} "
            f"| {f'{state[0]:.1f}' if state else '–'} |"
        )
    return lines


def difference_table(groups: dict) -> list[str]:
    lines = [
        f"| model | method | vs | Δ final acc (points) [{100 * CONFIDENCE:.0f}% CI] "
        f"| Δ best acc (points) [{100 * CONFIDENCE:.0f}% CI] |",
        "|---|---|---|---:|---:|",
    ]
    for (model, method), res in groups.items():
        base = groups.get((model, BASELINE))
        if method == BASELINE or base is None:
            continue
        cells = [_interval([f(r) for r in res], [f(r) for r in base]) for f in (final_acc, best_acc)]
        lines.append(f"| {model} | {method} | {BASELINE} | {cells[0]} | {cells[1]} |")
    return lines


def hyperparameters(groups: dict) -> str:
    """Each model's and method's first-epoch hyperparameters, as its first run recorded them."""
    seen: list[str] = []
    for (model, method), res in groups.items():
        row = res[0]["history"][0]
        values = ", ".join(f"{k} {row[k]:g}" for k in ("gamma", "tau", "lr") if k in row)
        config = res[0].get("config") or {}
        if method == "bop2":
            values += f", sigma {config.get('sigma', TrainConfig.sigma):g}"
        schedule = config.get("schedule") or GENERIC_DEFAULTS["schedule"]
        values += f", {schedule} schedule"
        if config.get("dropout") is not None:
            values += f", dropout {config['dropout']:g}"
        if config.get("augment") not in (None, False, "none"):
            values += f", {config['augment']} augmentation"
        seen.append(f"{model} {method}: {values}")
    return "; ".join(seen)


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return platform.processor() or "unknown CPU"
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    name = fields.get("Model name", "unknown CPU").strip()
    return f"{name}, {fields.get('CPU(s)', '?').strip()} CPUs (lscpu)"


def _adopted_note(done: dict[str, dict]) -> list[str]:
    adopted = sorted((k, r["adopted_from"]) for k, r in done.items() if "adopted_from" in r)
    if not adopted:
        return []
    runs = "; ".join(f"{k} from {path}" for k, path in adopted)
    return [
        "",
        f"† Includes runs trained before, outside this benchmark, with its settings (`--adopt`): {runs}. "
        "Their accuracies are what this benchmark would compute (a run's result is a function of its "
        "settings and seed), but their seconds were measured at another time, under another load.",
    ]


def report(args: argparse.Namespace, done: dict[str, dict], argv: list[str]) -> str:
    groups = grouped(args, done)
    # The command that trains the runs; options that only resume or tabulate are named apart.
    only_report = ("--report-only", "--partial", "--resume", "--overwrite")
    runs_argv = [a for a in argv if a not in only_report]
    extra = [a for a in argv if a in only_report]
    targets = ", ".join(f"{m} {100 * args.targets[m]:g}%" for m in args.models)
    cut = sorted(
        {(m, len(r[0]["history"])) for (m, _), r in groups.items() if len(r[0]["history"]) < args.epochs}
    )
    unfinished = [
        f"{m}: unfinished, every run cut to the {n} epochs all its runs have (of {args.epochs} planned)."
        for m, n in cut
    ]
    lines = [
        f"Command: `nice -n 10 python benchmarks/bop_vs_latent.py {' '.join(runs_argv)}`"
        + (f" (tables: the same with `{' '.join(extra)}`)" if extra else ""),
        "",
        f"CPU: {cpu_name()}; one torch thread per run, one run at a time. "
        f"Epochs: {args.epochs}; seeds: {','.join(map(str, args.seeds))}; batch size {args.batch_size}; "
        "otherwise what `bnnflow train` resolves (the network's recipe, else the defaults: "
        f"{hyperparameters(groups)}). Targets: {targets}.",
        *(["", *unfinished] if unfinished else []),
        "",
        "Mean ± sample standard deviation over seeds. Final: the last epoch's test accuracy; best: the "
        "highest over epochs (chosen on the test set). Epochs and seconds to target: first epoch at or "
        "above the target, training seconds (steps only, no evaluation) up to its end, over the seeds "
        "that reached it. Flips/epoch: mean over epochs (latent Adam: sign changes of latent weights).",
        "",
        *summary_table(args, groups),
        *_adopted_note(done),
        "",
        f"Difference from {BASELINE} in percentage points, mean over seeds, with the {100 * CONFIDENCE:.0f}% "
        "Welch t interval (scipy.stats.ttest_ind, unequal variances):",
        "",
        *difference_table(groups),
    ]
    return "\n".join(lines)


def plot(args: argparse.Namespace, done: dict[str, dict], path: Path) -> None:
    """Mean test accuracy per epoch with +-1 sd bands, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    groups = grouped(args, done)
    models = [m for m in args.models if any(k[0] == m for k in groups)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(5.5 * max(1, len(models)), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        for method in args.methods:
            res = groups.get((model, method))
            if not res:
                continue
            n = min(len(r["history"]) for r in res)
            curves = torch.tensor([[100 * row["test_acc"] for row in r["history"][:n]] for r in res])
            mean = curves.mean(0)
            sd = curves.std(0) if len(res) > 1 else torch.zeros(n)
            epochs = list(range(1, n + 1))
            ax.plot(epochs, mean.tolist(), marker="o", label=f"{method} ({len(res)} seeds)")
            ax.fill_between(epochs, (mean - sd).tolist(), (mean + sd).tolist(), alpha=0.2)
        ax.axhline(100 * args.targets[model], color="grey", linestyle=":", linewidth=1, label="target")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=f"{model}: mean ± 1 sd over seeds")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_args(argv)
        torch.set_num_threads(1)
        done, todo = plan(args)
        for run_dir in args.adopt:
            key, done[key] = adopt(args, run_dir)
            todo.pop(tuple(done[key]["config"][k] for k in ("model", "method", "seed")), None)
        if not args.report_only:
            for model in args.models:
                train_model(args, model, todo, done)
        text = report(args, done, argv)
        out = Path(args.out)
        atomic_write_text(out / "results.md", text + "\n")
        plot(args, done, out / "curves.png")
    except BnnflowError as exc:
        print(f"bop_vs_latent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(text)
    print(f"\nwritten to {out / 'results.md'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
