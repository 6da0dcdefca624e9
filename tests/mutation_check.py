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
    # --- issue 20: a signal between two files ---
    Bug("signal-acts-between-log-and-backup",
        "SIGTERM between an epoch's log row and its backup waits for the backup",
        "machinery/resume.py",
        "        if not self.holding:\n            self.act()", "        self.act()",
        ("tests/test_signals.py::test_a_signal_at_each_point_of_an_epoch_stops_where_log_and_backup_agree[after epoch 1's row-SIGTERM]",)),
    Bug("sigterm-sweep-sees-the-gap",
        "SIGTERM 0 to 5 ms after the first row: message, files and rerun agree",
        "machinery/resume.py",
        "        if not self.holding:\n            self.act()", "        self.act()",
        ("tests/test_signals.py::test_sigterm_just_after_an_epochs_row_leaves_message_files_and_rerun_agreeing[0]", "tests/test_signals.py::test_sigterm_just_after_an_epochs_row_leaves_message_files_and_rerun_agreeing[2]", "tests/test_signals.py::test_sigterm_just_after_an_epochs_row_leaves_message_files_and_rerun_agreeing[5]")),
    Bug("ctrl-c-acts-between-log-and-backup",
        "Ctrl-C between an epoch's log row and its backup waits for the backup",
        "machinery/resume.py",
        "    SIGNALS = (signal.SIGINT, signal.SIGTERM)", "    SIGNALS = (signal.SIGTERM,)",
        ("tests/test_signals.py::test_a_signal_at_each_point_of_an_epoch_stops_where_log_and_backup_agree[after epoch 1's row-SIGINT]",)),
    Bug("stop-before-any-epoch-promises-a-resume",
        "a stop before the first backup says the rerun starts at epoch 1",
        "machinery/outputs.py",
        '    again = ("resume from the backup" if epochs else',
        '    again = ("resume from the backup" if True else',
        ("tests/test_signals.py::test_a_signal_at_each_point_of_an_epoch_stops_where_log_and_backup_agree[step 5 of epoch 1-SIGTERM]",)),
    Bug("rerun-starts-over-silently",
        "a rerun that starts over says why",
        "machinery/resume.py",
        '        print(f"Starting at epoch 1: {why}.")', "        pass",
        ("tests/test_resume_config.py::test_a_logged_epoch_without_a_backup_starts_over_and_says_why",)),
    # --- issue 20: no test hangs the suite or leaks into the next ---
    Bug("no-time-limit",
        "every test runs under a 300 s limit",
        "pytest.ini",
        "timeout = 300", "timeout = 0",
        ("tests/test_isolation.py::test_every_test_runs_under_a_300_second_limit",)),
    Bug("op-determinism-outlives-its-test-file",
        "a seeded run leaves no op determinism to the next test file",
        "tests/conftest.py",
        "    config.disable_op_determinism()\n", "",
        ("tests/test_isolation.py::test_a_seeded_run_leaves_no_seed_and_no_op_determinism_behind",)),
    Bug("python-seed-outlives-its-test-file",
        "a seeded run leaves no global seed to the next test file",
        "tests/conftest.py",
        "    random.seed(None)\n", "",
        ("tests/test_isolation.py::test_a_seeded_run_leaves_no_seed_and_no_op_determinism_behind",)),
    Bug("seed-reset-not-automatic",
        "every test file gets the reset without asking for it",
        "tests/conftest.py",
        '@pytest.fixture(scope="module", autouse=True)', '@pytest.fixture(scope="module")',
        ("tests/test_isolation.py::test_a_seeded_run_leaves_no_seed_and_no_op_determinism_behind",)),
    Bug("keras-cache-left-on-failure",
        "a fixture that fails leaves no synthetic data in the Keras cache",
        "tests/conftest.py",
        "                              synthetic.make_arrays(train=train, test=test))\n    finally:\n",
        "                              synthetic.make_arrays(train=train, test=test))\n"
        "    except BaseException:\n        raise\n    else:\n",
        ("tests/test_isolation.py::test_synthetic_data_leaves_the_keras_cache_even_when_its_user_fails",)),
    Bug("ports-never-retried",
        "workers that lose a port before binding it start again on new ones",
        "tests/conftest.py",
        "        if not lost_a_port or attempt == attempts - 1:", "        if True:",
        ("tests/test_isolation.py::test_workers_that_lose_a_port_before_binding_it_are_started_again_on_new_ones",)),
    # --- issue 20: tests that could not fail ---
    Bug("check-npz-loads-the-arrays",
        "the .npz checks read only the headers",
        "machinery/npz.py",
        "            dtypes = [array_dtype(archive, key) for key in keys]",
        "            dtypes = [np.load(path, allow_pickle=False)[key].dtype for key in keys]",
        ("tests/test_data.py::test_check_npz_reads_headers_only_for_valid_files",)),
    Bug("help-hides-a-flag",
        "--help shows every flag",
        "machinery/cli.py",
        'help="with --distribute mirrored and no GPU: split the CPU into this many devices")',
        "help=argparse.SUPPRESS)",
        ("tests/test_cli.py::test_help_documents_every_flag",)),
    Bug("lock-file-renamed",
        "the lock is run.lock",
        "machinery/folder.py",
        'LOCK = "run.lock"', 'LOCK = "run.pid"',
        ("tests/test_readme_errors.py::test_a_folder_another_run_is_using",)),
    Bug("manifest-renamed",
        "the manifest is manifest.json",
        "machinery/folder.py",
        'MANIFEST = "manifest.json"', 'MANIFEST = "run-manifest.json"',
        ("tests/test_readme_errors.py::test_a_folder_with_a_finished_run",)),
    Bug("half-written-file-left",
        "a file is written whole or not at all: a failed write leaves no partial file",
        "machinery/outputs.py",
        "        partial.unlink(missing_ok=True)\n", "        pass\n",
        ("tests/test_readme_errors.py::test_a_full_disk_while_writing",)),
    Bug("a-table-row-loses-its-test",
        "every row of the troubleshooting table is checked by a test",
        "tests/test_readme_errors.py",
        '    check_row(capsys, "`--limit 1`", ["--limit", "1", "--output-dir", tmp_path])',
        '    assert cli(["--limit", "1", "--output-dir", str(tmp_path)]) == 1',
        ("tests/test_readme_errors.py::test_every_row_of_the_table_is_checked",)),
    Bug("output-file-undocumented",
        "docs/flags-and-outputs.md lists every output file",
        "docs/flags-and-outputs.md",
        "| `run.lock` | only while", "| run lock | only while",
        ("tests/test_project.py::test_docs_document_every_output_file",)),
    # --- issue 20: every field of the resume key ---
    Bug("resume-ignores-dataset",
        "a backup made on another --dataset is refused, naming it",
        "machinery/resume.py",
        'MUST_MATCH = ("dataset", ', "MUST_MATCH = (",
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[dataset]",)),
    Bug("resume-ignores-other-data",
        "a backup made on other data is refused",
        "machinery/resume.py",
        '    if not changed and saved.get("data_sha256") != wanted["data_sha256"]:',
        "    if False:",
        ("tests/test_faults.py::test_resuming_onto_other_data_is_refused",)),
    Bug("resume-ignores-batchnorm",
        "a backup of the other variant (--no-batchnorm) is refused, naming it",
        "machinery/resume.py",
        '"data_sha256", "batchnorm", "batch_size"', '"data_sha256", "batch_size"',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[variant]",)),
    Bug("resume-ignores-batch-size",
        "a backup made with another --batch-size is refused, naming it",
        "machinery/resume.py",
        '"batchnorm", "batch_size", "validation_split"', '"batchnorm", "validation_split"',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[batch_size]",)),
    Bug("resume-ignores-validation-split",
        "a backup made with another --validation-split is refused, naming it",
        "machinery/resume.py",
        '"batch_size", "validation_split",\n', '"batch_size",\n',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[validation_split]",)),
    Bug("resume-ignores-fast",
        "a backup made without --fast is refused by a --fast run",
        "machinery/resume.py",
        '"limit", "fast", "seed"', '"limit", "seed"',
        ("tests/test_faults.py::test_resuming_with_a_setting_that_changes_training_is_refused[change0]",)),
    Bug("resume-ignores-seed",
        "a backup made with another --seed is refused",
        "machinery/resume.py",
        '"fast", "seed", "distribute"', '"fast", "distribute"',
        ("tests/test_faults.py::test_resuming_with_a_setting_that_changes_training_is_refused[change2]",)),
    Bug("resume-ignores-track-batch-stats",
        "a backup made without --track-batch-stats is refused by a run with it",
        "machinery/resume.py",
        '"bn_momentum",\n              "track_batch_stats")', '"bn_momentum")',
        ("tests/test_resume_config.py::test_backup_of_another_configuration_is_refused[track_batch_stats]",)),
    # --- issue 20: the backup itself ---
    Bug("backup-hash-checks-length-only",
        "a backup changed without changing its length is refused (SHA-256)",
        "machinery/backup.py",
        "    if (len(data), hashlib.sha256(data).hexdigest()) != tuple(expected):",
        "    if len(data) != expected[0]:",
        ("tests/test_promises.py::test_a_backup_with_one_byte_changed_is_refused",)),
    Bug("optimizer-steps-unchecked",
        "a backup whose optimizer took another number of steps is refused",
        "machinery/backup.py",
        "    if steps is not None and taken != epochs * steps:", "    if False:",
        ("tests/test_promises.py::test_a_backup_whose_optimizer_took_other_steps_is_refused",)),
    Bug("resume-keeps-fresh-weights",
        "a resumed run continues from the saved weights",
        "machinery/backup.py",
        "        variable.assign(array)", "        pass",
        ("tests/test_promises.py::test_a_resumed_run_continues_from_the_saved_weights",)),
    Bug("backup-removed-before-the-outputs",
        "the backup goes last, once every output is written",
        "machinery/resume.py",
        "    session.history = read_history_csv(out / outputs.HISTORY_CSV)\n",
        "    session.history = read_history_csv(out / outputs.HISTORY_CSV)\n"
        "    shutil.rmtree(out / outputs.BACKUP_DIR)\n",
        ("tests/test_readme_errors.py::test_a_full_disk_while_writing",)),
    Bug("empty-metadata-read-as-a-default",
        "an unreadable training_metadata.json is refused as unreadable",
        "machinery/backup.py",
        "        metadata = json.loads((folder / METADATA).read_text())",
        "        metadata = json.loads((folder / METADATA).read_text() or "
        "'{\"epoch\": 1, \"state\": \"epoch-1.npz\", \"bytes\": 0, \"sha256\": \"\"}')",
        ("tests/test_readme_errors.py::test_a_backup_that_disagrees[damage_metadata_emptied]",)),
    Bug("log-disagreeing-with-backup-trusted",
        "a history.csv that disagrees with the backup is refused",
        "machinery/backup.py",
        "    if logged[:epochs] != list(range(epochs)):", "    if False:",
        ("tests/test_readme_errors.py::test_a_backup_that_disagrees[damage_log_row_dropped]",)),
    Bug("ctrl-c-writes-no-history",
        "Ctrl-C writes history.json of the completed epochs",
        "machinery/outputs.py",
        "        write_json(out / HISTORY_JSON, history)\n        written.append(out / HISTORY_JSON)\n",
        "",
        ("tests/test_resume_config.py::test_ctrl_c_exits_130_writes_the_finished_epoch_and_keeps_the_backup",)),
    Bug("sigterm-draws-no-curves",
        "SIGTERM draws training_history.png of the completed epochs",
        "machinery/outputs.py",
        "        if pictures:\n            write_atomically(out / TRAINING_HISTORY_PNG,",
        "        if False:\n            write_atomically(out / TRAINING_HISTORY_PNG,",
        ("tests/test_readme_errors.py::test_sigterm_during_training",)),
    # --- issue 20: what a run writes and flags that had no bug ---
    Bug("run-json-never-deterministic",
        "run.json records the determinism flag",
        "machinery/outputs.py",
        '"deterministic": args.seed is not None,', '"deterministic": False,',
        ("tests/test_promises.py::test_run_json_records_the_data_hash_determinism_and_momentum_power",)),
    Bug("data-hash-without-shapes",
        "run.json's data SHA-256 covers each array's dtype, shape and bytes",
        "machinery/outputs.py",
        '        digest.update(f"{array.dtype}{array.shape}".encode())\n', "",
        ("tests/test_promises.py::test_run_json_records_the_data_hash_determinism_and_momentum_power",)),
    Bug("momentum-power-of-epochs",
        "run.json's momentum^steps counts training steps",
        "machinery/batchnorm_stats.py",
        '"momentum_power_steps": config["bn_momentum"] ** steps,',
        '"momentum_power_steps": config["bn_momentum"] ** epochs,',
        ("tests/test_promises.py::test_run_json_records_the_data_hash_determinism_and_momentum_power",)),
    Bug("no-confusion-matrix",
        "a run draws confusion_matrix.png",
        "machinery/outputs.py",
        '"confusion_matrix": out / CONFUSION_MATRIX_PNG}', '"confusion_matrix": out / PREDICTIONS_PNG}',
        ("tests/test_promises.py::test_no_batchnorm_trains_the_network_without_its_five_layers_and_draws_no_statistics",)),
    Bug("statistics-drawn-without-batchnorm",
        "batchnorm_statistics.png is not written without BatchNormalization",
        "machinery/outputs.py",
        '    if evaluation["batchnorm_statistics"]:', "    if True:",
        ("tests/test_promises.py::test_no_batchnorm_trains_the_network_without_its_five_layers_and_draws_no_statistics",)),
    Bug("no-batchnorm-ignored",
        "--no-batchnorm trains the network without its five BatchNormalization layers",
        "model_batchnorm.py",
        "        return train_and_test(args, run_data, args.output_dir,\n"
        "                              batchnorm=not args.no_batchnorm)",
        "        return train_and_test(args, run_data, args.output_dir,\n"
        "                              batchnorm=True)",
        ("tests/test_promises.py::test_no_batchnorm_trains_the_network_without_its_five_layers_and_draws_no_statistics",)),
    Bug("overwrite-keeps-the-old-run",
        "--overwrite removes the old run's files, also an unfinished run's backup",
        "machinery/folder.py",
        "    if overwrite and manifest:\n        remove_run(out, manifest)\n",
        "    if overwrite and manifest:\n        pass\n",
        ("tests/test_promises.py::test_overwrite_removes_every_file_of_the_old_finished_run",
         "tests/test_promises.py::test_overwrite_after_an_unfinished_run_starts_at_epoch_1")),
    Bug("dry-run-trains",
        "--dry-run stops before training",
        "model_batchnorm.py",
        "            return dry_run(args, run_data)", "            dry_run(args, run_data)",
        ("tests/test_cli.py::test_dry_run_checks_everything_and_trains_nothing",)),
    Bug("redownload-keeps-the-cached-files",
        "--redownload deletes the cached files before fetching them",
        "machinery/data.py",
        "    if redownload:\n        for path in files.values():",
        "    if False:\n        for path in files.values():",
        ("tests/test_data.py::test_redownload_deletes_the_cached_files_then_fetches",)),
    Bug("k49-has-48-classes",
        "--dataset k49 trains a 49-way model",
        "machinery/datasets.py",
        '"k49": {"classes": 49,', '"k49": {"classes": 48,',
        ("tests/test_resume.py::test_k49_trains_a_49_way_model_and_reports_balanced_accuracy",)),
    Bug("k49-without-balanced-accuracy",
        "K49 prints the balanced accuracy its authors recommend",
        "machinery/outputs.py",
        '    if config["dataset"] == "k49":', "    if False:",
        ("tests/test_resume.py::test_k49_trains_a_49_way_model_and_reports_balanced_accuracy",)),
    Bug("mnist-hash-one-digit-off",
        "mnist.npz is checked against its official SHA-256, Keras' own",
        "machinery/keras_datasets.py",
        "fc17b673d1\"", "fc17b673d2\"",
        ("tests/test_promises.py::test_the_mnist_hash_is_the_one_keras_itself_checks",)),
    Bug("read-only-folder-traceback",
        "a read-only folder or a missing permission while writing is one line",
        "machinery/errors.py",
        "errno.EDQUOT, errno.EROFS, errno.EACCES,\n                 errno.EPERM, errno.EIO}",
        "errno.EDQUOT,\n                 errno.EIO}",
        ("tests/test_promises.py::test_a_read_only_folder_or_a_missing_permission_is_one_line[read-only folder]",
         "tests/test_promises.py::test_a_read_only_folder_or_a_missing_permission_is_one_line[no permission]")),
    Bug("genuine-bug-hidden",
        "a genuine bug still shows its traceback",
        "machinery/cli.py",
        "    except KeyboardInterrupt as err:\n        what, code",
        "    except Exception as err:\n        print(f\"error: {err}\", file=sys.stderr)\n"
        "        return 1\n    except KeyboardInterrupt as err:\n        what, code",
        ("tests/test_promises.py::test_a_genuine_bug_still_shows_its_traceback",)),
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
