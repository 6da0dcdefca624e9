"""--compare runs a question of comparisons.py: each variant, a copy of the run's settings
with its differences, trained from the same seed on the same data in its own sub-folder;
then the table (also comparison.json) and the picture."""
import dataclasses
import json
import shutil

from machinery import comparisons, files, layer_inputs, networks
from machinery.learning_rates import diverged_at, seconds_to_reach
from machinery.quiet import keras

THRESHOLDS = (0.90, 0.95, 0.98)
ACCURACY_ROWS = (
    ("val_accuracy_moving_statistics", "final validation accuracy, moving statistics"),
    ("val_accuracy_batch_statistics", "final validation accuracy, batch statistics"),
    ("val_accuracy_recomputed_statistics",
     "final validation accuracy, recomputed statistics (--recompute-bn-stats)"),
)


def epochs_to_reach(val_accuracy, threshold):
    """The first epoch (counted from 1) whose validation accuracy reaches threshold, or None."""
    return next((epoch for epoch, value in enumerate(val_accuracy, start=1)
                 if value >= threshold), None)


def comparison_summary(runs, rows=()):
    """Per run (keyed by its sub-folder): the figures the table shows; `rows`, the
    comparison's own (comparisons.Comparison.rows), under "rows"."""
    summary = {}
    for run in runs:
        result, name = run.result, run.folder.name
        history, epoch_seconds = result["history"], result["epoch_seconds"]
        reached = {f"{threshold:.0%}": epochs_to_reach(history["val_accuracy"], threshold)
                   for threshold in THRESHOLDS}
        summary[name] = {
            "label": run.label,
            "learning_rate": result.get("config", {}).get("learning_rate"),
            "parameters": result["parameters"],
            "test_accuracy": result["test_accuracy"],
            "test_loss": result["test_loss"],
            "epochs_to_val_accuracy": reached,
            "seconds_to_val_accuracy": {
                key: seconds_to_reach(epoch, epoch_seconds, result.get("resumed_from_epoch", 0))
                for key, epoch in reached.items()},
            "seconds_per_epoch": (sum(epoch_seconds) / len(epoch_seconds)
                                  if epoch_seconds else None),
            "diverged_at_epoch": diverged_at(history.get("loss", [])),
            **validation_accuracies(history, result.get("batchnorm_diagnosis")),
            "rows": {label: value(result, run.folder) for label, value, _ in rows},
        }
    return summary


def validation_accuracies(history, diagnosis):
    """The final validation accuracy as Keras measured it (moving statistics), with batch
    statistics, and after --recompute-bn-stats; None where it does not apply."""
    recomputed = diagnosis and diagnosis["recomputed"]
    return {
        "val_accuracy_moving_statistics": history["val_accuracy"][-1],
        "val_accuracy_batch_statistics": (diagnosis["val_accuracy_batch_statistics"]
                                          if diagnosis else None),
        "val_accuracy_recomputed_statistics": (diagnosis["val_accuracy_moving_statistics"]
                                               if recomputed else None),
    }


def shown(value, form, missing="-"):
    return missing if value is None else form.format(value)


def format_comparison(summary, rows=()):
    """A Markdown table of the comparison, one column per run; `rows` as the summary's."""
    names = list(summary)

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(summary[n]) for n in names) + " |"

    def clock(key, unit, form):  # "-": reached, but not timed (epochs before a resume)
        return lambda s: shown(s[key][unit], form, "not reached"
                               if s["epochs_to_val_accuracy"][unit] is None else "-")

    lines = [
        "| | " + " | ".join(summary[n]["label"] for n in names) + " |",
        "|---|" + "---|" * len(names),
        row("parameters", lambda s: f"{s['parameters']:,}"),
        row("test accuracy", lambda s: f"{s['test_accuracy']:.4f}"),
        row("test loss", lambda s: f"{s['test_loss']:.4f}"),
    ]
    for key in summary[names[0]]["epochs_to_val_accuracy"]:
        lines.append(row(f"epochs to {key} validation accuracy",
                         clock("epochs_to_val_accuracy", key, "{}")))
        lines.append(row(f"seconds to {key} validation accuracy",
                         clock("seconds_to_val_accuracy", key, "{:.1f}")))
    lines.append(row("seconds per epoch", lambda s: shown(s["seconds_per_epoch"], "{:.2f}")))
    lines.append(row("diverged (loss NaN or infinite)", lambda s: shown(
        s["diverged_at_epoch"], "diverged at epoch {}", "no")))
    for key, label in ACCURACY_ROWS:
        lines.append(row(label, lambda s, k=key: shown(s.get(k), "{:.4f}")))
    for label, _, form in rows:
        lines.append(row(label, lambda s, k=label, f=form: shown(s["rows"].get(k), f)))
    return "\n".join(lines)


def draw(run, runs):
    """The comparison's picture, and every run's layer inputs side by side if tracked."""
    out = run.output_dir
    where = f"{run.dataset.upper()}, {runs[0].result['train_images']:,} training images"
    comparisons.KINDS[run.compare].draw(runs, out / files.comparison_picture(run.compare),
                                        where)
    tracks = [r.folder / files.LAYER_INPUTS_JSON for r in runs]
    if all(path.exists() for path in tracks):
        layer_inputs.draw([json.loads(path.read_text()) for path in tracks],
                          [r.label for r in runs], out / files.LAYER_INPUTS_PNG,
                          title=f"{where}: inputs of {run.layer_inputs_of} on a probe batch "
                                "of validation images, training mode")


def variant_of(run, variant):
    """The settings of one variant: the run's with its changes, in its own sub-folder."""
    changes = dict(variant.changes)
    if "network" in changes:
        changes["network"] = networks.NETWORKS[changes["network"]]
    return dataclasses.replace(run, variant=variant.name, **changes)


def compare(run, data, train_and_test):
    """The lesson's `train_and_test(settings, data)` for each variant of run.compare, each
    from run.seed; then the table, written and printed, and the picture."""
    comparison, out, runs = comparisons.KINDS[run.compare], run.output_dir, []
    for variant in comparison.variants(run.learning_rates, run.batch_sizes):
        keras.utils.set_random_seed(run.seed)
        print(f"--- {variant.label} ---")
        result, folder = train_and_test(variant_of(run, variant), data), out / variant.name
        shutil.copyfile(folder / files.HISTORY_JSON, out / files.history_of(variant.name))
        runs.append(comparisons.Run(variant.label, result, folder))
    summary = comparison_summary(runs, comparison.rows)
    files.write_json(out / files.COMPARISON_JSON, summary)
    print(format_comparison(summary, comparison.rows))
    if run.pictures:
        draw(run, runs)
    return {"comparison": summary, "variants": {r.folder.name: r.result for r in runs}}
