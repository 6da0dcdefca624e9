"""A mutation check: does the suite notice when a documented promise breaks?

    python tests/mutation_check.py                # every bug below
    python tests/mutation_check.py --only NAME    # one (or several: --only A B)
    python tests/mutation_check.py --list         # the bugs, without running anything

Each entry of BUGS is a small deliberate bug against one promise of README.md and docs/:
the file, its exact original text, the replacement, and the tests that pin the
promise. For each, the project is copied to a temporary folder (without .venv,
.git and outputs), the original text is replaced there (it must occur exactly
once), and the chosen tests run in the copy with `-x -q -p no:cacheprovider`.
A bug is *caught* if they fail and *survived* if they pass. Before that, the
chosen tests run once on an unchanged copy and must pass (--no-baseline skips
this). Exit code 0 only if every bug is caught. Not part of the regular suite
or of CI: it takes several minutes.
"""
import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LEFT_OUT = shutil.ignore_patterns(".venv", ".git", "outputs", "__pycache__", ".pytest_cache",
                                  "*.pyc")
TIMEOUT_S = 600


@dataclass
class Bug:
    name: str
    promise: str  # what README.md or docs/ promises, in its words
    file: str
    original: str
    replacement: str
    tests: tuple  # pytest node ids that pin the promise


BUGS = [
    # --- the nine bugs of issue 8, which the suite used to miss ---
    Bug("resume-ignores-limit",
        "a backup made with another --limit is refused",
        "machinery/resume.py",
        '"validation_split",\n              "limit", ', '"validation_split",\n              ',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[limit]",)),
    Bug("no-op-determinism",
        "--seed turns on TensorFlow's op determinism",
        "machinery/startup.py",
        "    tf.config.experimental.enable_op_determinism()\n", "    pass\n",
        ("tests/test_reproducibility.py::test_seed_turns_on_op_determinism_and_seeds_numpy_with_n",)),
    Bug("seed-zero-not-n",
        "--seed N seeds with N: same seed identical, another seed different",
        "machinery/startup.py",
        "keras.utils.set_random_seed(seed)", "keras.utils.set_random_seed(0)",
        ("tests/test_reproducibility.py::test_same_seed_in_separate_processes_gives_identical_histories",)),
    Bug("compare-seeds-once",
        "--compare trains both variants from the same seed",
        "machinery/compare.py",
        "        keras.utils.set_random_seed(args.seed)\n", "",
        ("tests/test_compare.py::test_compare_starts_both_variants_from_the_same_seed[default]",)),
    Bug("compare-prints-no-table",
        "--compare prints a table",
        "machinery/compare.py",
        "    print(format_comparison(summary))\n", "    format_comparison(summary)\n",
        ("tests/test_compare.py::test_compare_prints_the_table_of_known_results",)),
    Bug("limit-takes-last",
        "--limit N uses only the first N training and the first N test images",
        "machinery/data.py",
        "(a[:limit] for a in", "(a[-limit:] for a in",
        ("tests/test_reproducibility.py::test_limit_keeps_the_first_training_and_test_images",)),
    Bug("fast-never-shuffles",
        "--fast reshuffles the training images every epoch, as fit does",
        "machinery/fast.py",
        "batch_size, shuffle=True)", "batch_size, shuffle=False)",
        ("tests/test_fast.py::test_fast_training_images_are_reshuffled_every_epoch",)),
    Bug("fused-ignores-trainable",
        "the fused layer computes what keras.layers.BatchNormalization computes (a frozen "
        "layer keeps its moving statistics)",
        "machinery/fast.py",
        "if training and self.trainable:", "if training:",
        ("tests/test_fast.py::test_frozen_fused_layer_is_left_untouched_in_training",)),
    Bug("plot-default-in-working-folder",
        "plot_history.py without -o writes the PNG beside the first file",
        "plot_history.py",
        'args.output or args.histories[0].with_suffix(".png")',
        'args.output or Path("curves.png")',
        ("tests/test_plot.py::test_command_line_without_o_writes_beside_the_first_file",)),
    # --- the rest of the README's promises ---
    Bug("compare-default-seed-0",
        "--compare uses seed 1 unless --seed",
        "machinery/cli.py",
        "COMPARE_SEED = 1", "COMPARE_SEED = 0",
        ("tests/test_compare.py::test_compare_starts_both_variants_from_the_same_seed[default]",)),
    Bug("fast-keeps-reshuffle-off",
        "--fast reshuffles the training images every epoch",
        "machinery/fast.py",
        "reshuffle_each_iteration=True", "reshuffle_each_iteration=False",
        ("tests/test_fast.py::test_fast_training_images_are_reshuffled_every_epoch",)),
    Bug("limit-only-training",
        "--limit N also keeps only the first N test images",
        "machinery/data.py",
        "x_train, y_train, x_test, y_test = (a[:limit] for a in (x_train, y_train, x_test, y_test))",
        "x_train, y_train = (a[:limit] for a in (x_train, y_train))",
        ("tests/test_reproducibility.py::test_limit_keeps_the_first_training_and_test_images",)),
    Bug("preprocess-divides-first",
        "preprocessing: convert to float32, then divide by 255",
        "model_batchnorm.py",
        '    x = x.astype("float32")\n    return x / 255\n',
        '    x = x / 255\n    return x.astype("float32")\n',
        ("tests/test_model.py::test_preprocess_converts_before_dividing",)),
    Bug("preprocess-divides-by-256",
        "preprocessing: divide by 255",
        "model_batchnorm.py",
        "    return x / 255\n", "    return x / 256\n",
        ("tests/test_model.py::test_preprocess_reshapes_converts_and_scales",)),
    Bug("dense-128",
        "the layer table: Dense 256, ReLU, 409,856 parameters",
        "model_batchnorm.py",
        'layers.Dense(256, activation="relu")', 'layers.Dense(128, activation="relu")',
        ("tests/test_model.py::test_layers_follow_the_reference_table",)),
    Bug("batchnorm-momentum",
        "every BatchNormalization keeps the Keras defaults (momentum 0.99)",
        "model_batchnorm.py",
        "return [norm_layer()] if batchnorm", "return [norm_layer(momentum=0.9)] if batchnorm",
        ("tests/test_model.py::test_every_batchnormalization_keeps_keras_defaults",)),
    Bug("adam-learning-rate",
        "Adam with the Keras defaults, learning rate 0.001",
        "model_batchnorm.py",
        "optimizer=keras.optimizers.Adam(),", "optimizer=keras.optimizers.Adam(0.01),",
        ("tests/test_model.py::test_compile_uses_adam_defaults_and_sparse_crossentropy",)),
    Bug("fast-validates-on-first-images",
        "--fast validates on the same last 20% of the training images",
        "machinery/fast.py",
        "uint8_batches(x_train[split_at:], y_train[split_at:], batch_size)",
        "uint8_batches(x_train[:len(x_train) - split_at], "
        "y_train[:len(x_train) - split_at], batch_size)",
        ("tests/test_fast.py::test_fast_holds_out_the_same_validation_images",)),
    Bug("fast-scales-by-256",
        "--fast scales the uint8 images bit for bit as preprocess does",
        "machinery/fast.py",
        "tf.float32) / 255", "tf.float32) / 256",
        ("tests/test_fast.py::test_pipeline_scales_exactly_like_preprocess",)),
    Bug("fused-epsilon",
        "the fused layer keeps the Keras defaults (epsilon 0.001)",
        "machinery/fast.py",
        "epsilon=self.epsilon)", "epsilon=1e-5)",
        ("tests/test_fast.py::test_fused_layer_at_inference_uses_the_moving_statistics[conv]",)),
    Bug("fused-momentum",
        "the fused layer updates the moving statistics as Keras does (momentum 0.99)",
        "machinery/fast.py",
        "exponential_avg_factor=1.0 - self.momentum)", "exponential_avg_factor=self.momentum)",
        ("tests/test_fast.py::test_fused_layer_matches_keras_in_training_and_inference[dense]",)),
    Bug("fast-one-step-per-call",
        "--fast runs 16 steps per call",
        "model_batchnorm.py",
        "fast.STEPS_PER_EXECUTION if args.fast else 1", "1",
        ("tests/test_fast.py::test_fast_run_writes_the_same_files_and_learns",)),
    Bug("csv-log-overwritten",
        "history.csv is appended as each epoch ends; history.json covers every epoch",
        "machinery/resume.py",
        "append=True", "append=False",
        ("tests/test_resume_config.py::test_the_same_command_resumes_and_history_covers_every_epoch",)),
    Bug("history-only-this-session",
        "history.json covers all epochs of the run, those before an interruption too",
        "model_batchnorm.py",
        "    history.history = session.history", "    session.history = history.history",
        ("tests/test_resume_config.py::test_the_same_command_resumes_and_history_covers_every_epoch",)),
    Bug("log-rows-kept",
        "a re-run resumes where the backup stopped (a log row the backup lacks is dropped)",
        "machinery/resume.py",
        "    keep_first_rows(log, epochs_done)\n", "",
        ("tests/test_resume_config.py::test_log_row_of_an_epoch_the_backup_lacks_is_dropped",)),
    Bug("restart-ignored",
        "--restart ignores a backup and starts at epoch 1",
        "machinery/resume.py",
        "    if restart:\n        return start_fresh(", "    if False:\n        return start_fresh(",
        ("tests/test_resume_config.py::test_restart_discards_a_backup_even_of_another_configuration",)),
    Bug("ctrl-c-exit-1",
        "Ctrl-C during training exits with code 130",
        "machinery/errors.py",
        "    code = 130\n", "    code = 1\n",
        ("tests/test_resume_config.py::test_ctrl_c_exits_130_writes_the_finished_epoch_and_keeps_the_backup",)),
    Bug("usage-error-exit-1",
        "exit code 2 is for a bad flag",
        "machinery/errors.py",
        "    code = 2\n", "    code = 1\n",
        ("tests/test_compare.py::test_compare_with_no_batchnorm_is_refused",)),
    Bug("errors-on-stdout",
        "each bad input gets one line on stderr",
        "machinery/cli.py",
        'print(f"error: {err}", file=sys.stderr)', 'print(f"error: {err}")',
        ("tests/test_compare.py::test_compare_with_no_batchnorm_is_refused",)),
    Bug("pickled-arrays-accepted",
        "a file holding pickled objects is refused, never unpickled",
        "machinery/npz.py",
        "    if any(dtype.hasobject for dtype in dtypes):\n", "    if False:\n",
        ("tests/test_data.py::test_malformed_data_dir_file_is_named_in_one_line[pickled objects-train]",)),
    Bug("output-dir-not-checked-first",
        "--output-dir is checked for writing before any data is loaded",
        "machinery/startup.py",
        "    check_output_dir(args.output_dir)\n", "",
        ("tests/test_cli.py::test_unwritable_output_folder_is_refused_before_loading_data",)),
    Bug("threshold-strictly-above",
        "epochs to 90/95/98% validation accuracy: the first epoch that reaches it",
        "machinery/compare.py",
        "if value >= threshold:", "if value > threshold:",
        ("tests/test_compare.py::test_compare_prints_the_table_of_known_results",)),
    Bug("test-line-reworded",
        "the run prints 'Test loss: <loss> / Test accuracy: <accuracy>'",
        "model_batchnorm.py",
        'print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")',
        'print(f"Test loss: {test_loss}, Test accuracy: {test_accuracy}")',
        ("tests/test_compare.py::test_compare_prints_each_variants_test_line",)),
    Bug("no-plot-still-draws-curves",
        "--no-plot writes no pictures",
        "model_batchnorm.py",
        "    if not args.no_plot:\n        plot_history.plot_history(",
        "    if True:\n        plot_history.plot_history(",
        ("tests/test_plot.py::test_no_plot_writes_no_picture_anywhere",)),
    Bug("no-plot-still-draws-comparison",
        "--no-plot writes no pictures (--compare's overlay included)",
        "machinery/compare.py",
        "    if not args.no_plot:\n", "    if True:\n",
        ("tests/test_plot.py::test_no_plot_writes_no_picture_anywhere",)),
    Bug("last-resort-font-counts",
        "class names never appear as missing-glyph boxes (Last Resort font never counts)",
        "plot_history.py",
        'if entry.name.startswith("Last Resort"):', 'if entry.name.startswith("Last Resort!"):',
        ("tests/test_plot.py::test_matplotlibs_last_resort_font_never_counts_as_covering",)),
    Bug("plot-title-dropped",
        "plot_history.py --title puts a title above the panels",
        "plot_history.py",
        "plot_history(args.histories[0], output, args.title)",
        "plot_history(args.histories[0], output)",
        ("tests/test_plot.py::test_command_line_title_goes_above_the_panels[one]",)),
    Bug("plot-epochs-from-0",
        "plot_history draws accuracy and loss per epoch (epochs counted from 1)",
        "plot_history.py",
        "return np.arange(1, len(series) + 1)", "return np.arange(len(series))",
        ("tests/test_plot.py::test_plot_from_dict",)),
    Bug("balanced-accuracy-is-accuracy",
        "K49 reports balanced accuracy (the mean of the per-class accuracies)",
        "machinery/outputs.py",
        "return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))",
        "return float(np.mean(y_pred == y_true))",
        ("tests/test_model.py::test_balanced_accuracy_matches_hand_computed_value",)),
    # --- batch versus moving statistics (README, "Batch versus moving statistics") ---
    Bug("diagnosis-never-notes",
        "a gap of more than 5 points between moving and batch statistics gets the note",
        "machinery/batchnorm_stats.py",
        "NOTE_GAP = 0.05", "NOTE_GAP = 1.0",
        ("tests/test_batchnorm_stats.py::test_default_run_on_real_digits_names_the_lag_after_the_test_line",)),
    Bug("diagnosis-moves-the-statistics",
        "the diagnosis puts back every weight and moving statistic",
        "machinery/batchnorm_stats.py",
        "            variable.assign(value)\n\n\ndef evaluate_with_batch_statistics",
        "            pass\n\n\ndef evaluate_with_batch_statistics",
        ("tests/test_batchnorm_stats.py::test_evaluating_with_batch_statistics_changes_no_variable",)),
    Bug("bn-momentum-ignored",
        "--bn-momentum sets every BatchNormalization layer's momentum",
        "model_batchnorm.py",
        "lambda: norm_class(momentum=args.bn_momentum)", "lambda: norm_class()",
        ("tests/test_batchnorm_stats.py::test_bn_momentum_reaches_every_layer",)),
    Bug("bn-momentum-not-in-resume-config",
        "a backup made with another --bn-momentum is refused",
        "machinery/resume.py",
        '"replicas", "bn_momentum",', '"replicas",',
        ("tests/test_batchnorm_stats.py::test_a_backup_with_another_bn_momentum_is_refused",)),
    Bug("recompute-flag-ignored",
        "--recompute-bn-stats recomputes the moving statistics before testing",
        "model_batchnorm.py",
        "    if args.recompute_bn_stats:", "    if False:",
        ("tests/test_batchnorm_stats.py::test_each_remedy_on_real_digits_reaches_95_percent_without_a_note[recompute-fast]",)),
    Bug("recompute-variance-of-squares",
        "the recomputed variance is the variance of each layer's inputs",
        "machinery/batchnorm_stats.py",
        "total_squares / count - mean ** 2", "total_squares / count",
        ("tests/test_batchnorm_stats.py::test_recomputed_statistics_are_the_layer_inputs_mean_and_variance",)),
    Bug("batch-stats-not-logged",
        "--track-batch-stats records the batch-statistics validation curve in history.json",
        "machinery/batchnorm_stats.py",
        "        if self.track_validation and logs is not None:",
        "        if False:",
        ("tests/test_batchnorm_stats.py::test_tracked_history_holds_batch_statistics_per_epoch",)),
    # --- other data sets, your own data, TensorBoard ---
    Bug("mnist-hash-unchecked",
        "mnist.npz is checked against the official file's SHA-256",
        "machinery/keras_datasets.py",
        "file_hash=os.environ.get(TEST_HASH_VARIABLE, MNIST_SHA256))", "file_hash=None)",
        ("tests/test_datasets.py::test_mnist_with_another_hash_is_fetched_again_and_offline_names_the_file",)),
    Bug("own-classes-one-short",
        "own data's class count is one more than its largest label",
        "machinery/own_data.py",
        "classes = int(max(train.max(), test.max())) + 1", "classes = int(max(train.max(), test.max()))",
        ("tests/test_datasets.py::test_own_data_takes_its_classes_from_the_labels",)),
    Bug("own-label-gap-accepted",
        "a gap in own data's labels is refused",
        "machinery/own_data.py",
        "    if missing:\n", "    if False:\n",
        ("tests/test_datasets.py::test_wrong_own_data_folder_is_one_clear_line[label gap]",)),
    Bug("tensorboard-variants-share-a-run",
        "--compare --tensorboard writes one TensorBoard run per variant",
        "machinery/outputs.py",
        "        logs = logs / out.name", "        logs = logs",
        ("tests/test_datasets.py::test_tensorboard_logs_hold_the_epoch_scalars_per_variant",)),
    # --- never lose a run (README, "When things go wrong") ---
    Bug("no-lock",
        "one run per folder: a second run is refused",
        "machinery/folder.py",
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)", "fcntl.flock(fd, fcntl.LOCK_UN)",
        ("tests/test_faults.py::test_a_second_run_on_the_same_folder_is_refused_and_no_lock_outlives_a_kill",)),
    Bug("finished-run-overwritten",
        "a finished run is refused unless --overwrite",
        "machinery/folder.py",
        'if manifest and manifest.get("state") == "finished" and not overwrite:', "if False:",
        ("tests/test_faults.py::test_a_finished_run_is_refused_not_overwritten",)),
    Bug("foreign-files-accepted",
        "a folder holding files the script did not write is refused",
        "machinery/folder.py",
        "    if foreign:\n", "    if False:\n",
        ("tests/test_faults.py::test_a_folder_with_files_of_the_users_own_is_never_touched",)),
    Bug("truncated-backup-trusted",
        "a backup whose state file is truncated is refused, offering --restart",
        "machinery/backup.py",
        "    if (len(data), hashlib.sha256(data).hexdigest()) != tuple(expected):",
        "    if False:",
        ("tests/test_faults.py::test_a_damaged_backup_is_one_line_offering_restart[damage_weights_truncated]",)),
    Bug("sigterm-exit-1",
        "SIGTERM exits with code 143",
        "machinery/errors.py",
        "    code = 143", "    code = 1",
        ("tests/test_faults.py::test_sigterm_is_handled_like_ctrl_c",)),
    Bug("full-disk-traceback",
        "a full disk is one line, exit 1, the backup kept",
        "machinery/errors.py",
        "    if not isinstance(err, OSError) or err.errno not in ENVIRONMENTAL:",
        "    if True:",
        ("tests/test_faults.py::test_a_disk_that_fills_at_the_first_backup_is_one_line",)),
    Bug("overlay-labels-whole-paths",
        "plot_history.py labels an overlay with the files' names",
        "plot_history.py",
        "labels = args.labels or default_labels(args.histories)",
        "labels = args.labels or [str(path) for path in args.histories]",
        ("tests/test_plot.py::test_overlay_labels_default_to_the_file_names",)),
    # --- issue 16: the converter and the standalone plotting helper ---
    Bug("converter-keeps-class-order",
        "tools/images_to_npz.py mixes the images, so that the validation split and the "
        "test set hold every class",
        "tools/images_to_npz.py",
        "order = np.random.default_rng(SEED).permutation(len(labels))",
        "order = np.arange(len(labels))",
        ("tests/test_datasets.py::test_docs_converter_command_makes_a_folder_that_trains",)),
    Bug("converter-unreadable-image-traceback",
        "tools/images_to_npz.py: an image that cannot be read is one line naming it",
        "tools/images_to_npz.py",
        "    except (UnidentifiedImageError, OSError, ValueError) as err:",
        "    except ValueError as err:",
        ("tests/test_images_to_npz.py::test_bad_input_is_one_line_and_exit_1",)),
    Bug("converter-overwrites-data-npz",
        "tools/images_to_npz.py never overwrites an existing data.npz",
        "tools/images_to_npz.py",
        "    if data.exists():", "    if False:",
        ("tests/test_images_to_npz.py::test_an_existing_data_npz_is_never_overwritten",)),
    Bug("plot-history-imports-the-project",
        "plot_history.py imports nothing of this project: it works alone in a folder",
        "plot_history.py",
        "import numpy as np\n", "import numpy as np\nfrom machinery.errors import ScriptError\n",
        ("tests/test_plot_cli.py::test_plot_history_alone_in_a_folder_runs_its_help_and_one_line_errors",)),
    Bug("plot-history-usage-text",
        "plot_history.py's bad command line is one line and exit code 2",
        "plot_history.py",
        '        raise UsageError(f"{message} (see --help)")',
        "        super().error(message)",
        ("tests/test_plot_cli.py::test_plot_history_alone_in_a_folder_runs_its_help_and_one_line_errors",)),
    Bug("history-error-not-one-line-in-the-lesson",
        "the lesson's command line tells the plotting helper's errors in one line",
        "machinery/cli.py",
        "    except (ScriptError, plot_history.HistoryError) as err:",
        "    except ScriptError as err:",
        ("tests/test_plot_cli.py::test_the_lessons_command_line_shows_a_helpers_error_as_one_line",)),
    Bug("benchmark-hides-torch-build",
        "the benchmark's first line says which torch build ran (CPU-only or CUDA)",
        "bench/benchmark.py",
        """        merged["torch"] += f" ({'CUDA ' + cuda if cuda else 'CPU-only'} build)"\n""",
        "",
        ("tests/test_bench.py::test_machine_line_says_which_torch_build_ran",)),
    Bug("run-json-field-undocumented",
        "docs/flags-and-outputs.md names every field of run.json",
        "machinery/outputs.py",
        '        "versions": versions(),\n',
        '        "versions": versions(), "undocumented_seconds": 0.0,\n',
        ("tests/test_cli.py::test_docs_name_every_run_json_field",)),
    # --- issue 17: layer inputs and learning rates ---
    Bug("layer-inputs-move-moving-stats",
        "--track-layer-inputs leaves training exactly as it was: the moving statistics "
        "are put back after each probe",
        "machinery/layer_inputs.py",
        "    with moving_statistics_kept(model):\n        values =",
        "    if True:\n        values =",
        ("tests/test_layer_inputs.py::test_tracking_leaves_training_exactly_as_it_was",)),
    Bug("layer-inputs-inference-mode",
        "the probe goes through the network in training mode (batch statistics)",
        "machinery/layer_inputs.py",
        "upstream(probe, training=True)", "upstream(probe, training=False)",
        ("tests/test_layer_inputs.py::test_the_last_percentiles_match_a_recomputation_from_the_saved_model",)),
    Bug("layer-inputs-other-percentiles",
        "the 15th, 50th and 85th percentiles, as in Ioffe & Szegedy's Figure 1",
        "machinery/layer_inputs.py",
        "PERCENTILES = (15, 50, 85)", "PERCENTILES = (10, 50, 90)",
        ("tests/test_layer_inputs.py::test_the_last_percentiles_match_a_recomputation_from_the_saved_model",)),
    Bug("layer-inputs-training-probe",
        "the probe batch is the first batch of validation images",
        "machinery/layer_inputs.py",
        'images = x_train[split_at:split_at + config["batch_size"]]',
        'images = x_train[:config["batch_size"]]',
        ("tests/test_layer_inputs.py::test_the_last_percentiles_match_a_recomputation_from_the_saved_model",)),
    Bug("layer-inputs-wrong-place",
        "both variants measure the same place; a BatchNormalization layer's place in the "
        "plain network is the next layer's inputs",
        "machinery/layer_inputs.py",
        "LESSON_LAYERS[LESSON_LAYERS.index(name):]", "LESSON_LAYERS[LESSON_LAYERS.index(name) + 1:]",
        ("tests/test_layer_inputs.py::test_both_variants_measure_the_same_place",)),
    Bug("layer-inputs-ten-points",
        "about 100 points per run: every ceil(steps / 100) steps",
        "machinery/layer_inputs.py",
        "math.ceil(total / POINTS)", "math.ceil(total / 10)",
        ("tests/test_layer_inputs.py::test_about_100_points_from_step_0_to_the_last",)),
    Bug("layer-inputs-off-under-compare",
        "--track-layer-inputs is on with --compare",
        "machinery/cli.py",
        "args.track_batch_stats = args.track_layer_inputs = True",
        "args.track_batch_stats = True",
        ("tests/test_learning_rates.py::test_every_pair_trains_in_its_own_folder_at_its_rate_from_the_same_seed",)),
    Bug("layer-inputs-always-on",
        "without the new flags a run prints and writes what it did before",
        "machinery/cli.py",
        "args.track_layer_inputs = args.track_layer_inputs or args.layer_inputs_of is not None",
        "args.track_layer_inputs = True",
        ("tests/test_learning_rates.py::test_the_faithful_run_trains_with_adams_0_001",
         "tests/test_learning_rates.py::test_without_the_new_flags_a_run_prints_what_it_printed_before")),
    Bug("learning-rate-ignored",
        "--learning-rate sets Adam's learning rate",
        "model_batchnorm.py",
        "keras.optimizers.Adam(learning_rate=learning_rate)", "keras.optimizers.Adam()",
        ("tests/test_learning_rates.py::test_a_diverging_run_stops_with_one_line_and_the_others_go_on",)),
    Bug("learning-rate-pairs-share-one-rate",
        "under --compare every (variant, rate) pair trains at its own rate",
        "machinery/compare.py",
        '"learning_rate": rate}', '"learning_rate": args.learning_rate}',
        ("tests/test_learning_rates.py::test_every_pair_trains_in_its_own_folder_at_its_rate_from_the_same_seed",)),
    Bug("divergence-not-stopped",
        "a run whose loss turns NaN or infinite stops at the end of that epoch; the others go on",
        "machinery/learning_rates.py",
        "            self.model.stop_training = True\n", "",
        ("tests/test_learning_rates.py::test_a_diverging_run_stops_with_one_line_and_the_others_go_on",)),
    Bug("divergence-not-in-table",
        "the table says \"diverged at epoch N\"",
        "machinery/compare.py",
        '"diverged_at_epoch": diverged_at(history.get("loss", [])),',
        '"diverged_at_epoch": None,',
        ("tests/test_learning_rates.py::test_the_table_has_a_column_per_pair_both_clocks_and_says_which_diverged",)),
    Bug("seconds-to-threshold-one-epoch-short",
        "the table gives the wall-clock seconds of the epochs up to the one reaching each "
        "threshold",
        "machinery/learning_rates.py",
        "return sum(epoch_seconds[:epoch])", "return sum(epoch_seconds[:epoch - 1])",
        ("tests/test_compare.py::test_compare_prints_the_table_of_known_results",)),
    Bug("several-rates-without-compare",
        "several --learning-rate values without --compare are one line, exit 2",
        "machinery/cli.py",
        "    if len(rates) > 1 and not args.compare:\n",
        "    if False:\n",
        ("tests/test_readme_errors.py::test_several_learning_rates_without_compare",)),
    Bug("learning-rate-zero-accepted",
        "a learning rate must be above 0",
        "machinery/cli.py",
        'if not 0 < value < float("inf"):', 'if not 0 <= value < float("inf"):',
        ("tests/test_readme_errors.py::test_learning_rate_not_above_0",)),
    Bug("resume-ignores-learning-rate",
        "a backup made at another learning rate is refused",
        "machinery/resume.py",
        '"track_batch_stats", "learning_rate")', '"track_batch_stats")',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[learning_rate]",)),
    Bug("manifest-lacks-pairs",
        "a --compare run at several rates owns its pairs' files (manifest.json)",
        "machinery/folder.py",
        "layer_inputs.LAYER_INPUTS_JSON, *compare.file_names(rates)]",
        "layer_inputs.LAYER_INPUTS_JSON, *compare.file_names()]",
        ("tests/test_learning_rates.py::test_every_pair_trains_in_its_own_folder_at_its_rate_from_the_same_seed",)),
    Bug("layer-inputs-no-budget",
        "the measurements take at most 3% of training's wall-clock time",
        "machinery/layer_inputs.py",
        'affordable = self.series["seconds"] <= BUDGET * (time.perf_counter() - self.started)',
        "affordable = True",
        ("tests/test_layer_inputs.py::test_the_measurements_stay_within_their_share_of_the_time",)),
    # --- issue 17: --predict ---
    Bug("predict-no-inversion",
        "--predict inverts a dark-on-light image; held-back digits both ways agree with "
        "model.evaluate within a point",
        "machinery/predict.py",
        "    if border.mean() > pixels.mean():", "    if False:",
        ("tests/test_predict.py::test_predict_agrees_with_the_models_evaluation_on_held_back_digits_both_ways",)),
    Bug("predict-inverts-silently",
        "--predict says so in the line of an inverted image",
        "machinery/predict.py",
        "{INVERTED if flipped else ''}", "",
        ("tests/test_predict.py::test_dark_on_light_images_are_inverted_and_say_so",)),
    Bug("predict-unscaled",
        "--predict scales images to [0, 1] as the training images were",
        "machinery/predict.py",
        "model.predict(preprocess(np.stack(pixels)), verbose=0)",
        "model.predict(preprocess(np.stack(pixels)) * 255, verbose=0)",
        ("tests/test_predict.py::test_predict_prints_the_models_probabilities_most_probable_first",)),
    Bug("predict-top3-least-first",
        "--predict shows the most probable class first, then the next two",
        "machinery/predict.py",
        "np.argsort(-probabilities, kind=\"stable\")", "np.argsort(probabilities, kind=\"stable\")",
        ("tests/test_predict.py::test_predict_prints_the_models_probabilities_most_probable_first",)),
    Bug("predict-always-kmnist-names",
        "--predict names the classes from the run's run.json (own data: class_names.txt)",
        "machinery/predict.py",
        "    if not record.is_file():\n", "    if True:\n",
        ("tests/test_predict.py::test_an_own_data_fast_model_predicts_with_its_class_names",)),
    Bug("predict-transparent-as-black",
        "--predict counts transparent pixels as white",
        "machinery/predict.py",
        'if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:', "if False:",
        ("tests/test_predict.py::test_transparent_pixels_count_as_white",)),
    Bug("predict-crops-not-resizes",
        "--predict resizes each image to 28x28",
        "machinery/predict.py",
        "gray.resize((SIDE, SIDE), Image.Resampling.LANCZOS)", "gray.crop((0, 0, SIDE, SIDE))",
        ("tests/test_predict.py::test_larger_colour_images_are_made_28x28_grayscale",)),
    Bug("predict-ignores-class-count",
        "--predict refuses a model trained on other classes than the names found",
        "machinery/predict.py",
        "    if model.output_shape[-1] != len(names):", "    if False:",
        ("tests/test_predict.py::test_a_model_trained_on_other_classes_than_the_names_found",)),
    Bug("predict-takes-the-lock",
        "--predict only reads: no lock, nothing written, works while a run holds the folder",
        "machinery/predict.py",
        "    names, where = names_beside(path)\n",
        "    names, where = names_beside(path)\n"
        "    __import__(\"machinery.folder\").folder.take_lock(path.parent)\n",
        ("tests/test_predict.py::test_predict_works_while_a_run_holds_the_folder",)),
    Bug("predict-ignores-other-flags",
        "--predict takes no other flag",
        "machinery/cli.py",
        "    if given:\n        parser.error(", "    if False:\n        parser.error(",
        ("tests/test_predict.py::test_another_flag_beside_predict[flag0]",)),
    Bug("predict-bad-image-traceback",
        "--predict: a file that is not an image is one line, no traceback",
        "machinery/predict.py",
        "    except (OSError, ValueError, Image.DecompressionBombError) as err:",
        "    except ValueError as err:",
        ("tests/test_predict.py::test_a_file_that_is_not_an_image",)),
]


def scratch_copy(folder):
    copy = Path(folder) / "project"
    shutil.copytree(ROOT, copy, ignore=LEFT_OUT)
    return copy


def apply(bug, copy):
    """Replace bug.original by bug.replacement in the copy; it must occur exactly once."""
    path = copy / bug.file
    text = path.read_text()
    found = text.count(bug.original)
    if found != 1:
        raise LookupError(f"{bug.file}: the original text occurs {found} times, not once")
    path.write_text(text.replace(bug.original, bug.replacement))


def run_tests(copy, tests):
    """pytest's exit code for `tests` in the copy (0 passed, 1 failed, else an error)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        done = subprocess.run(command, cwd=copy, capture_output=True, text=True,
                              timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "timeout", ""
    return done.returncode, done.stdout[-3000:] + done.stderr[-3000:]


def verdict(code):
    return {0: "survived", 1: "caught", "timeout": "caught (timed out)"}.get(
        code, f"error (pytest exit code {code})")


def check(bug):
    with tempfile.TemporaryDirectory(prefix="mutation-") as folder:
        copy = scratch_copy(folder)
        try:
            apply(bug, copy)
        except LookupError as err:
            return f"error ({err})", ""
        code, output = run_tests(copy, bug.tests)
    return verdict(code), output


def baseline(bugs):
    """The chosen tests must pass on the unchanged project, or no verdict means anything."""
    tests = sorted({test for bug in bugs for test in bug.tests})
    with tempfile.TemporaryDirectory(prefix="mutation-baseline-") as folder:
        code, output = run_tests(scratch_copy(folder), tests)
    return code == 0, output


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[b.name for b in BUGS],
                        help="check only these bugs")
    parser.add_argument("--list", action="store_true", help="list the bugs and stop")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip running the chosen tests on the unchanged project first")
    parser.add_argument("--verbose", action="store_true",
                        help="show the failing test of each caught bug, and pytest's output "
                             "for bugs that survived or errored")
    return parser.parse_args()


def main():
    args = parse_args()
    bugs = [bug for bug in BUGS if not args.only or bug.name in args.only]
    if args.list:
        for bug in bugs:
            print(f"{bug.name}: {bug.promise} ({bug.file}; {', '.join(bug.tests)})")
        return 0
    start = time.monotonic()
    if not args.no_baseline:
        passed, output = baseline(bugs)
        print(f"baseline (chosen tests on the unchanged project): {'passed' if passed else 'FAILED'}",
              flush=True)
        if not passed:
            print(output)
            return 1
    results = {}
    for bug in bugs:
        began = time.monotonic()
        results[bug.name], output = check(bug)
        print(f"{results[bug.name]:<20} {bug.name:<32} {time.monotonic() - began:5.0f} s  "
              f"{bug.promise}", flush=True)
        if args.verbose:
            print(output if not results[bug.name].startswith("caught") else
                  "\n".join(f"    {line}" for line in output.splitlines()
                            if line.startswith(("FAILED", "ERROR"))))
    caught = sum(result.startswith("caught") for result in results.values())
    print(f"{caught} of {len(bugs)} bugs caught in {time.monotonic() - start:.0f} s")
    return 0 if caught == len(bugs) else 1


if __name__ == "__main__":
    sys.exit(main())
