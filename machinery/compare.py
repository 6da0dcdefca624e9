"""--compare: the lesson's question, does BatchNormalization help? The same network
trained with and without it, from the same seed on the same data, at each
--learning-rate; both clocks (epochs and seconds) to each validation accuracy."""
import dataclasses
import json
import shutil

import plot_history
from machinery import files, layer_inputs
from machinery.learning_rates import diverged_at, draw_curves, pair_names, seconds_to_reach
from machinery.quiet import keras

VARIANTS = (("batchnorm", True), ("no_batchnorm", False))
VARIANT_LABELS = {"batchnorm": "with BatchNormalization",
                  "no_batchnorm": "without BatchNormalization"}
THRESHOLDS = (0.90, 0.95, 0.98)
ACCURACY_ROWS = (
    ("val_accuracy_moving_statistics", "final validation accuracy, moving statistics"),
    ("val_accuracy_batch_statistics", "final validation accuracy, batch statistics"),
    ("val_accuracy_recomputed_statistics",
     "final validation accuracy, recomputed statistics (--recompute-bn-stats)"),
)


def pairs(rates):
    """(variant, batchnorm, learning rate, sub-folder) of each run --compare makes."""
    batchnorm = dict(VARIANTS)
    return [(variant, batchnorm[variant], rate, name)
            for variant, rate, name in pair_names([v for v, _ in VARIANTS], list(rates))]


def folder_names(rates):
    """The sub-folders of --compare at these learning rates; those of one rate (the
    variants' own names) always, so that a folder started with one rate and resumed with
    several still holds only its own files."""
    names = [name for *_, name in pairs(rates)]
    return names + [variant for variant, _ in VARIANTS if variant not in names]


def pair_label(variant, rate, rates):
    """The table's and the pictures' name of a run: the rate only where there are several."""
    label = VARIANT_LABELS[variant]
    return label if len(rates) == 1 else f"{label}, learning rate {rate:g}"


def epochs_to_reach(val_accuracy, threshold):
    """The first epoch (counted from 1) whose validation accuracy reaches threshold, or None."""
    for epoch, value in enumerate(val_accuracy, start=1):
        if value >= threshold:
            return epoch
    return None


def comparison_summary(results, labels=VARIANT_LABELS):
    """Per run (keyed by its sub-folder): the figures the table shows."""
    summary = {}
    for name, result in results.items():
        history, epoch_seconds = result["history"], result["epoch_seconds"]
        reached = {f"{threshold:.0%}": epochs_to_reach(history["val_accuracy"], threshold)
                   for threshold in THRESHOLDS}
        summary[name] = {
            "label": labels[name],
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


def format_comparison(summary):
    """A Markdown table of the comparison, one column per run."""
    names = list(summary)

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(summary[n]) for n in names) + " |"

    def clock(key, unit, form):
        return lambda s: ("not reached" if s[key][unit] is None and s["epochs_to_val_accuracy"]
                          [unit] is None else "-" if s[key][unit] is None
                          else form.format(s[key][unit]))

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
    lines.append(row("seconds per epoch", lambda s: (
        "-" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}")))
    lines.append(row("diverged (loss NaN or infinite)", lambda s: (
        "no" if s["diverged_at_epoch"] is None else f"diverged at epoch {s['diverged_at_epoch']}")))
    for key, label in ACCURACY_ROWS:
        lines.append(row(label, lambda s, k=key: "-" if s.get(k) is None else f"{s[k]:.4f}"))
    return "\n".join(lines)


def draw(run, results, labels):
    """The validation curves of every run, and their layer inputs side by side."""
    out, names = run.output_dir, list(results)
    images = results[names[0]]["train_images"]
    where = f"{run.dataset.upper()}, {images:,} training images"
    if len(run.learning_rates) > 1:  # a panel per rate
        draw_curves([(VARIANT_LABELS[variant], rate, results[name]["history"])
                     for variant, _, rate, name in pairs(run.learning_rates)],
                    out / files.COMPARISON_PNG, title=f"{where}: validation accuracy")
    else:
        plot_history.plot_comparison([results[n]["history"] for n in names],
                                     labels=[labels[n] for n in names],
                                     path=out / files.COMPARISON_PNG,
                                     title=f"{where}: validation curves")
    tracks = [out / n / files.LAYER_INPUTS_JSON for n in names]
    if all(path.exists() for path in tracks):
        layer_inputs.draw([json.loads(path.read_text()) for path in tracks],
                          [labels[n] for n in names], out / files.LAYER_INPUTS_PNG,
                          title=f"{where}: inputs of {run.layer_inputs_of} on a probe batch "
                                "of validation images, training mode")


def compare(run, data, train_and_test):
    """Run the lesson's `train_and_test(settings, data)` for both variants at each
    learning rate, each a copy of `run` with its differences, from run.seed, in its
    sub-folder; write and print the comparison."""
    out, rates = run.output_dir, run.learning_rates
    results, labels = {}, {}
    for variant, batchnorm, rate, name in pairs(rates):
        keras.utils.set_random_seed(run.seed)
        labels[name] = pair_label(variant, rate, rates)
        print(f"--- {labels[name]} ---")
        results[name] = train_and_test(dataclasses.replace(
            run, variant=name, batchnorm=batchnorm, learning_rate=rate), data)
        shutil.copyfile(out / name / files.HISTORY_JSON, out / files.history_of(name))
    summary = comparison_summary(results, labels)
    files.write_json(out / files.COMPARISON_JSON, summary)
    print(format_comparison(summary))
    if run.pictures:
        draw(run, results, labels)
    return {"comparison": summary, "variants": results}
