"""bench/benchmark.py's arithmetic and tables: medians, ratios repeat by repeat, FLOP/s
against the measured peak, per-epoch wall and CPU seconds, stalls, target verdicts.
No timing and no TensorFlow here, so tests/test_bench.py checks it from known numbers."""
import statistics

import flops

BFLOAT16_VARIANTS = ("fast-bf16", "default-bf16", "pytorch-bf16", "pytorch-bf16-1thread")
PROJECT_VARIANTS = ("default", "fast", "fast-bf16", "default-bf16", "fast-inter1",
                    "fast-tfdata1")
STALL_SECONDS = 1.0  # a stretch this long under a tenth of a core is a stall


def measurements(run, validation_images):
    """One run's figures from its run.json: images/s over the median later epoch (the
    first also traces the graph), FLOP/s likewise, and each epoch's wall and CPU."""
    later = run["epoch_seconds"][1:]
    seconds = statistics.median(later)
    return {
        "images_per_second": run["train_images"] / seconds,
        "flops_per_second": flops.epoch_flops(run["train_images"], validation_images) / seconds,
        "seconds_per_epoch": seconds,
        "first_epoch_seconds": run["epoch_seconds"][0],
        "evaluation_seconds": run["evaluation_seconds"],
        "epoch_seconds": run["epoch_seconds"],
        "epoch_cpu_seconds": run.get("epoch_cpu_seconds", []),
        "test_accuracy": run["test_accuracy"],
    }


def medians(runs):
    """The median of each number over the repeats; accuracy as mean and spread; the
    longest stall of any repeat."""
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float))]
    summary = {k: statistics.median(run[k] for run in runs) for k in keys}
    for key in ("val_accuracy", "test_accuracy"):
        values = [run[key] for run in runs]
        summary[key] = statistics.mean(values)
        summary[f"{key}_spread"] = max(values) - min(values)
    summary["longest_stall"] = max(run.get("longest_stall", 0.0) for run in runs)
    return summary


def peak_for(variant, peaks):
    return peaks.get("bfloat16" if variant in BFLOAT16_VARIANTS else "float32")


def table(results, peaks):
    base = results.get("default")
    lines = ["| variant | images/s | × default | s/epoch | first epoch s | eval s "
             "| GFLOP/s | % of peak | peak RSS MB | × default | longest stall s "
             "| val acc (spread) | test acc (spread) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        speed = f"{m['images_per_second'] / base['images_per_second']:.2f}" if base else "-"
        memory = f"{m['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        peak = peak_for(name, peaks)
        share = f"{100 * m['flops_per_second'] / peak:.1f}" if peak else "-"
        lines.append(
            f"| {name} | {m['images_per_second']:,.0f} | {speed} | {m['seconds_per_epoch']:.2f} "
            f"| {m['first_epoch_seconds']:.2f} | {m['evaluation_seconds']:.2f} "
            f"| {m['flops_per_second'] / 1e9:.1f} | {share} "
            f"| {m['peak_rss_mb']:,.0f} | {memory} | {m['longest_stall']:.2f} "
            f"| {m['val_accuracy']:.4f} ({m['val_accuracy_spread']:.4f}) "
            f"| {m['test_accuracy']:.4f} ({m['test_accuracy_spread']:.4f}) |")
    return "\n".join(lines)


def ratios(runs, top, bottom, key="images_per_second"):
    """top / bottom in each repeat (runs hold the repeats in order)."""
    return [a[key] / b[key] for a, b in zip(runs[top], runs[bottom])]


def repeats_table(runs):
    count = len(next(iter(runs.values())))
    header = " | ".join(f"repeat {i + 1}" for i in range(count))
    lines = [f"| variant | {header} |", "|---|" + "---:|" * count]
    for name, repeats in runs.items():
        cells = " | ".join(f"{r['images_per_second']:,.0f} (load {r['load']:.1f})"
                           for r in repeats)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def epochs_table(runs):
    """Every epoch of every run: wall seconds / process CPU seconds."""
    lines = ["| variant | repeat | epochs: wall s / CPU s (cores) | longest stall s |",
             "|---|---:|---|---:|"]
    for name, repeats in runs.items():
        for number, r in enumerate(repeats, 1):
            epochs = ", ".join(f"{w:.2f}/{c:.2f} ({c / w:.2f})" for w, c in
                               zip(r["epoch_seconds"], r["epoch_cpu_seconds"]))
            lines.append(f"| {name} | {number} | {epochs} | {r['longest_stall']:.2f} |")
    return "\n".join(lines)


RATIO_TARGETS = [  # (what, numerator, denominator, key, sense, bound)
    ("fast images/s vs lesson", "fast", "lesson", "images_per_second", ">=", 2.0),
    ("fast images/s vs default", "fast", "default", "images_per_second", ">=", 2.0),
    ("fast-bf16 images/s vs pytorch-bf16", "fast-bf16", "pytorch-bf16",
     "images_per_second", ">=", 1.2),
    ("default images/s vs lesson (the machinery's cost)", "default", "lesson",
     "images_per_second", ">=", 0.95),
    ("fast peak memory vs default", "fast", "default", "peak_rss_mb", "<=", 0.8),
]
SAME_ACCURACY = [("fast", "default"), ("fast-bf16", "fast"), ("default", "lesson")]


def verdict(values, sense, bound):
    return all(v >= bound if sense == ">=" else v <= bound for v in values)


def targets(runs):
    """Each target judged in every repeat (the worst repeat decides), accuracy by the
    means within the larger spread, and stalls in every run of the project."""
    lines = ["| target | every repeat | met |", "|---|---|---|"]
    for what, top, bottom, key, sense, bound in RATIO_TARGETS:
        if top in runs and bottom in runs:
            values = ratios(runs, top, bottom, key)
            lines.append(f"| {what} {sense} {bound} | {', '.join(f'{v:.2f}' for v in values)} "
                         f"| {'yes' if verdict(values, sense, bound) else 'no'} |")
    for top, bottom in SAME_ACCURACY:
        if top in runs and bottom in runs:
            a, b = medians(runs[top]), medians(runs[bottom])
            gap = abs(a["val_accuracy"] - b["val_accuracy"])
            spread = max(a["val_accuracy_spread"], b["val_accuracy_spread"])
            lines.append(f"| {top} mean val accuracy within the repeats' spread of {bottom} "
                         f"| {gap * 100:.2f} points (spread {spread * 100:.2f}) "
                         f"| {'yes' if gap <= spread else 'no'} |")
    for name in (v for v in PROJECT_VARIANTS if v in runs):
        stalls = [r["longest_stall"] for r in runs[name]]
        lines.append(f"| {name}: no stretch of {STALL_SECONDS:.0f} s or more under a tenth "
                     f"of a core | longest {', '.join(f'{s:.2f}' for s in stalls)} s "
                     f"| {'yes' if max(stalls) < STALL_SECONDS else 'no'} |")
    return "\n".join(lines)
