"""--compare: the lesson's question, does BatchNormalization help? The same network
trained with and without it, from the same seed on the same data."""
import shutil

import plot_history
from machinery.outputs import write_json
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
COMPARISON_JSON = "comparison.json"
COMPARISON_PNG = "batchnorm_comparison.png"


def history_name(variant):
    return f"history_{variant}.json"


def file_names():
    """The files --compare writes beside the variants' folders."""
    return [*(history_name(name) for name, _ in VARIANTS), COMPARISON_JSON, COMPARISON_PNG]


def folder_names():
    return [name for name, _ in VARIANTS]


def epochs_to_reach(val_accuracy, threshold):
    """The first epoch (counted from 1) whose validation accuracy reaches threshold, or None."""
    for epoch, value in enumerate(val_accuracy, start=1):
        if value >= threshold:
            return epoch
    return None


def comparison_summary(results):
    summary = {}
    for name, result in results.items():
        history, epoch_seconds = result["history"], result["epoch_seconds"]
        summary[name] = {
            "parameters": result["parameters"],
            "test_accuracy": result["test_accuracy"],
            "test_loss": result["test_loss"],
            "epochs_to_val_accuracy": {
                f"{threshold:.0%}": epochs_to_reach(history["val_accuracy"], threshold)
                for threshold in THRESHOLDS
            },
            "seconds_per_epoch": (sum(epoch_seconds) / len(epoch_seconds)
                                  if epoch_seconds else None),
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
    """A Markdown table of the comparison, one column per variant."""
    names = list(summary)

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(summary[n]) for n in names) + " |"

    lines = [
        "| | " + " | ".join(VARIANT_LABELS[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
        row("parameters", lambda s: f"{s['parameters']:,}"),
        row("test accuracy", lambda s: f"{s['test_accuracy']:.4f}"),
        row("test loss", lambda s: f"{s['test_loss']:.4f}"),
    ]
    for key in summary[names[0]]["epochs_to_val_accuracy"]:
        lines.append(row(f"epochs to {key} validation accuracy", lambda s, k=key: (
            "not reached" if s["epochs_to_val_accuracy"][k] is None
            else str(s["epochs_to_val_accuracy"][k]))))
    lines.append(row("seconds per epoch", lambda s: (
        "-" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}")))
    for key, label in ACCURACY_ROWS:
        lines.append(row(label, lambda s, k=key: "-" if s.get(k) is None else f"{s[k]:.4f}"))
    return "\n".join(lines)


def compare(args, data, train_and_test):
    """Run the lesson's `train_and_test(args, data, out, batchnorm)` for both variants,
    each from args.seed, into sub-folders; write and print the comparison."""
    out = args.output_dir
    results = {}
    for name, batchnorm in VARIANTS:
        keras.utils.set_random_seed(args.seed)
        print(f"--- {VARIANT_LABELS[name]} ---")
        results[name] = train_and_test(args, data, out / name, batchnorm)
        shutil.copyfile(out / name / "history.json", out / history_name(name))
    summary = comparison_summary(results)
    write_json(out / COMPARISON_JSON, summary)
    print(format_comparison(summary))
    if not args.no_plot:
        plot_history.plot_comparison(
            [results[name]["history"] for name, _ in VARIANTS],
            labels=[VARIANT_LABELS[name] for name, _ in VARIANTS],
            path=out / COMPARISON_PNG,
            title=f"{args.dataset.upper()}, {results['batchnorm']['train_images']:,} "
                  "training images: validation curves",
        )
    return {"comparison": summary, "variants": results}
