"""The benchmark's arithmetic (bench/report.py, bench/flops.py, bench/cpu_sampler.py):
ratios repeat by repeat, target verdicts, the FLOP count and stall detection, from
known numbers (no timing)."""
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import benchmark  # noqa: E402
import cpu_sampler  # noqa: E402
import flops  # noqa: E402
import report  # noqa: E402


def run(images_per_second, peak_rss_mb=1000.0, val_accuracy=0.9, stall=0.0):
    return {"images_per_second": images_per_second, "flops_per_second": 1e9,
            "seconds_per_epoch": 2.0, "first_epoch_seconds": 3.0, "evaluation_seconds": 0.5,
            "epoch_seconds": [3.0, 2.0], "epoch_cpu_seconds": [2.9, 3.8],
            "peak_rss_mb": peak_rss_mb, "val_accuracy": val_accuracy, "test_accuracy": 0.9,
            "load": 1.0, "longest_stall": stall}


def lines_of(runs):
    return report.targets(runs).splitlines()


def test_training_flops_match_a_hand_count_of_the_layer_table():
    # MACs per image: conv 1: 26*26 positions x 32 filters x 3*3*1 = 194,688;
    # conv 2: 11*11 x 64 x 3*3*32 = 2,230,272; dense: 1,600*256 = 409,600; 256*10 = 2,560.
    forward_macs = 194_688 + 2_230_272 + 409_600 + 2_560  # 2,837,120
    assert flops.forward_flops() == 2 * forward_macs == 5_674_240
    # forward + weight gradients + input gradients (none for the image itself)
    assert flops.training_flops() == 2 * (3 * forward_macs - 194_688) == 16_633_344


def test_epoch_flops_count_training_and_one_forward_pass_over_validation():
    assert flops.epoch_flops(10, 4) == 10 * 16_633_344 + 4 * 5_674_240


def test_theoretical_peak_is_cores_times_clock_times_flop_per_cycle():
    # two 512-bit FMA pipes: 2 pipes x 16 float32 lanes x 2 FLOPs = 64 per cycle
    assert flops.theoretical_peak(4.0, "float32", cores=2) == 2 * 4.0e9 * 64
    assert flops.theoretical_peak(4.0, "bfloat16", cores=2) == 2 * 4.0e9 * 128


def test_measurements_take_the_median_later_epoch():
    measured = report.measurements(
        {"train_images": 800, "epoch_seconds": [9.0, 2.0, 4.0, 1.0],
         "epoch_cpu_seconds": [5.0, 3.0, 3.0, 2.0], "evaluation_seconds": 0.1,
         "test_accuracy": 0.5}, validation_images=200)
    assert measured["seconds_per_epoch"] == 2.0  # median of 2, 4, 1; the first is tracing
    assert measured["images_per_second"] == 400.0
    assert measured["flops_per_second"] == (800 * 16_633_344 + 200 * 5_674_240) / 2.0


def test_every_repeat_must_meet_a_speed_target():
    runs = {"lesson": [run(1000), run(1000), run(1000)],
            "default": [run(1000), run(1000), run(1000)],
            "fast": [run(2100), run(2500), run(1900)]}  # the median passes, repeat 3 not
    lines = lines_of(runs)
    assert "| fast images/s vs lesson >= 2.0 | 2.10, 2.50, 1.90 | no |" in lines
    runs["fast"][2] = run(2000)
    assert "| fast images/s vs default >= 2.0 | 2.10, 2.50, 2.00 | yes |" in lines_of(runs)


def test_memory_bf16_and_machinery_targets():
    runs = {"lesson": [run(1000)], "default": [run(960, peak_rss_mb=1000)],
            "fast": [run(2000, peak_rss_mb=810)], "fast-bf16": [run(2400)],
            "pytorch-bf16": [run(2000)]}
    lines = lines_of(runs)
    assert "| fast peak memory vs default <= 0.8 | 0.81 | no |" in lines
    assert "| fast-bf16 images/s vs pytorch-bf16 >= 1.2 | 1.20 | yes |" in lines
    assert "| default images/s vs lesson (the machinery's cost) >= 0.95 | 0.96 | yes |" in lines


def test_accuracy_is_judged_by_the_means_within_the_larger_spread():
    runs = {"default": [run(1, val_accuracy=0.90), run(1, val_accuracy=0.92)],
            "fast": [run(1, val_accuracy=0.925), run(1, val_accuracy=0.925)]}
    # means 0.910 and 0.925: 1.5 points apart, the larger spread is 2 points
    assert ("| fast mean val accuracy within the repeats' spread of default "
            "| 1.50 points (spread 2.00) | yes |") in lines_of(runs)


def test_a_stall_of_a_second_in_any_repeat_fails_the_stall_target():
    runs = {"fast": [run(1, stall=0.3), run(1, stall=1.0)]}
    assert ("| fast: no stretch of 1 s or more under a tenth of a core "
            "| longest 0.30, 1.00 s | no |") in lines_of(runs)


def test_targets_skip_variants_that_were_not_run():
    lines = report.targets({"default": [run(1000)], "fast": [run(1500)]})
    assert "pytorch" not in lines and "lesson" not in lines


def test_medians_take_the_middle_run_and_accuracy_the_mean_and_spread():
    runs = [run(v, val_accuracy=a) for v, a in ((3, 0.80), (1, 0.90), (2, 0.94))]
    summary = report.medians(runs)
    assert summary["images_per_second"] == 2
    assert summary["val_accuracy"] == pytest.approx(0.88)  # (0.80 + 0.90 + 0.94) / 3
    assert summary["val_accuracy_spread"] == pytest.approx(0.14)


def test_machine_line_says_which_torch_build_ran():
    # torch.version.cuda is None in PyTorch's CPU-only build, "13.0" in PyPI's Linux wheel.
    cpu = benchmark.machine([{"tensorflow": "2.21.0"}, {"torch": "2.13.0+cpu", "torch_cuda": None}])
    cuda = benchmark.machine([{"torch": "2.13.0", "torch_cuda": "13.0"}])
    assert "tensorflow 2.21.0, torch 2.13.0+cpu (CPU-only build)" in cpu
    assert cuda.endswith("; torch 2.13.0 (CUDA 13.0 build)")
    assert "torch_cuda" not in cpu + cuda
    assert "torch" not in benchmark.machine([{"tensorflow": "2.21.0"}]).split(";")[1]


def test_epochs_table_shows_wall_and_cpu_seconds_of_every_epoch():
    table = report.epochs_table({"fast": [run(1)]})
    assert "| fast | 1 | 3.00/2.90 (0.97), 2.00/3.80 (1.90) | 0.00 |" in table


def test_idle_stretches_need_low_cpu_and_no_wait_for_a_core():
    # (wall, CPU, run-queue wait): busy, then 1.5 s idle, then 1 s starved by others
    samples = [(0.0, 0.0, 0.0), (0.5, 0.5, 0.0), (1.0, 0.5, 0.0), (1.5, 0.52, 0.0),
               (2.0, 0.52, 0.0), (2.5, 0.52, 0.4), (3.0, 0.53, 0.9), (3.5, 0.9, 0.9)]
    assert cpu_sampler.idle_stretches(samples) == [(0.5, 1.5)]
    assert cpu_sampler.longest_between(samples, 0.0, 1.5) == 1.0


@pytest.mark.parametrize("attempt", ["conv1-matmul", "conv1-filter-matmul",
                                     "conv2-input-as-forward"])
def test_each_convolution_attempt_computes_what_keras_conv2d_computes(attempt):
    # An attempt that computed something else would time a different network.
    import fast_attempts
    import numpy as np
    import model_batchnorm as mb
    from machinery.quiet import keras, tf
    keras.utils.set_random_seed(0)
    model = mb.build_model(mb.input_shape, 10)
    attempted = fast_attempts.with_attempt(model, attempt, keras, tf)
    x = tf.constant(np.random.default_rng(0).random((4, 28, 28, 1), "float32"))
    outputs, gradients = [], []
    for network in (model, attempted):
        with tf.GradientTape() as tape:
            y = network(x, training=True)
            loss = tf.reduce_sum(y * tf.range(10, dtype=tf.float32))
        outputs.append(y.numpy())
        gradients.append([g.numpy() for g in tape.gradient(loss, network.trainable_variables)])
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-5, atol=1e-6)
    # float32 sums in another order, some of them to nearly nothing (BatchNormalization
    # follows): all gradients together within a thousandth of their norm; a wrong
    # gradient is off by the whole of it.
    keras_gradient, attempted_gradient = (np.concatenate([g.ravel() for g in network])
                                          for network in gradients)
    assert (np.linalg.norm(attempted_gradient - keras_gradient)
            <= 1e-3 * np.linalg.norm(keras_gradient))


def test_top_ops_sum_a_layers_calls_and_mark_its_gradients(capsys):
    import collections
    import profile_step
    scope = "while/body/_1/StatefulPartitionedCall/batchnorm_cnn/conv2d_1/convolution"
    totals = collections.Counter({
        f"{scope}:_MklNativeFusedConv2D": 0.25,  # a training step's forward pass
        f"other/{scope}:_MklNativeFusedConv2D": 0.5,  # validation's, elsewhere in the graph
        f"x/gradient_tape/batchnorm_cnn/conv2d_1/convolution/Conv2DBackpropInput"
        ":_MklNativeConv2DBackpropInput": 1.0})
    profile_step.print_top_ops(totals, whole=2.0, count=5)
    rows = capsys.readouterr().out.splitlines()
    assert "| gradient of conv2d_1: Conv2DBackpropInput | 1.000 | 50.0% |" in rows
    assert "| conv2d_1: FusedConv2D | 0.750 | 37.5% |" in rows


def smoke_repeat(smoke, floor, answer=0.5, load=1.0):
    return {"smoke": smoke, "floor": floor, "--help": answer, "bad flag": answer,
            "smoke cpu": smoke, "floor cpu": floor, "--help cpu": answer,
            "bad flag cpu": answer, "load": load}


def test_smoke_targets_are_judged_in_every_repeat():
    import smoke
    met = smoke.verdicts([smoke_repeat(13.0, 10.0), smoke_repeat(11.0, 10.0, answer=1.49)])
    assert met.splitlines() == [
        "smoke / floor at most 1.3 in every repeat: met (worst 1.30)",
        "--help under 1.5 s in every repeat: met (worst 1.49 s)",
        "bad flag under 1.5 s in every repeat: met (worst 1.49 s)"]
    missed = smoke.verdicts([smoke_repeat(10.0, 10.0), smoke_repeat(13.1, 10.0, answer=1.5)])
    assert "MISSED (worst 1.31)" in missed.splitlines()[0]
    assert all("MISSED (worst 1.50 s)" in line for line in missed.splitlines()[1:])


def test_smoke_table_shows_each_repeats_ratio_and_the_median():
    import smoke
    lines = smoke.repeats_table([smoke_repeat(12.0, 10.0), smoke_repeat(30.0, 20.0),
                                 smoke_repeat(11.0, 10.0)]).splitlines()
    assert [line.split(" | ")[4] for line in lines[2:]] == [
        "1.20 (1.20)", "1.50 (1.50)", "1.10 (1.10)", "1.20 (1.20)"]


def test_another_checkouts_smoke_run_gets_its_own_ratio_and_verdict():
    import smoke
    rows = [{**smoke_repeat(12.0, 10.0), "other": 14.0, "other cpu": 14.0},
            {**smoke_repeat(11.0, 10.0), "other": 12.0, "other cpu": 12.0}]
    lines = smoke.repeats_table(rows, ("smoke", "other")).splitlines()
    assert lines[0].split(" | ")[5:7] == ["smoke / floor (CPU)", "other / floor (CPU)"]
    assert [line.split(" | ")[5:7] for line in lines[2:]] == [
        ["1.20 (1.20)", "1.40 (1.40)"], ["1.10 (1.10)", "1.20 (1.20)"],
        ["1.15 (1.15)", "1.30 (1.30)"]]
    assert lines[2].split(" | ")[1] == "smoke, other, floor, --help, bad flag"
    assert lines[3].split(" | ")[1] == "other, floor, --help, bad flag, smoke"
    verdict = smoke.verdicts(rows, ("smoke", "other")).splitlines()
    assert verdict[:2] == ["smoke / floor at most 1.3 in every repeat: met (worst 1.20)",
                           "other / floor at most 1.3 in every repeat: MISSED (worst 1.40)"]


STACKS = {  # py-spy raw frames, as it writes them: 'function (file:line)'
    "imports": "<module> (model_batchnorm.py:40);train (model_batchnorm.py:90);"
               "TensorFlowTrainer.fit (keras/src/backend/tensorflow/trainer.py:3);"
               "_find_and_load (<frozen importlib._bootstrap>:1176)",
    "tracing (any tf.function)": "main (model_batchnorm.py:1);diagnose (machinery/b.py:2);"
                                 "TensorFlowTrainer.evaluate (keras/trainer.py:3);"
                                 "trace_function (tensorflow/tracing_compilation.py:4)",
    "fit: callbacks (backup, statistics monitor, log)":
        "train (model_batchnorm.py:1);TensorFlowTrainer.fit (keras/trainer.py:2);"
        "CallbackList.on_epoch_end (keras/src/callbacks/callback_list.py:3);"
        "Monitor.on_epoch_end (machinery/batchnorm_stats.py:4)",
    "evaluate, predict, diagnosis": "main (model_batchnorm.py:1);"
                                    "train_and_test (model_batchnorm.py:2);"
                                    "test (model_batchnorm.py:3);"
                                    "TensorFlowTrainer.predict (keras/trainer.py:4)",
    "fit: validation": "train_and_test (model_batchnorm.py:2);train (model_batchnorm.py:3);"
                       "TensorFlowTrainer.fit (keras/trainer.py:4);"
                       "TensorFlowTrainer.evaluate (keras/trainer.py:5)",
    "fit: training steps": "train_and_test (model_batchnorm.py:2);"
                           "train (model_batchnorm.py:3);"
                           "TensorFlowTrainer.fit (keras/trainer.py:4)",
}


@pytest.mark.parametrize("phase", STACKS)
def test_a_sample_goes_to_the_first_phase_whose_frames_it_holds(phase):
    import phases
    assert phases.phase_of(STACKS[phase]) == phase


def test_phase_seconds_count_the_main_threads_samples_at_the_rate():
    import phases
    raw = "\n".join([f"thread (1): MainThread;{STACKS['fit: validation']} 30",
                     f"thread (2): Thread-1;{STACKS['fit: validation']} 50",
                     "thread (1): MainThread 10"])
    seconds = phases.seconds_per_phase(raw, rate=40)
    assert seconds["fit: validation"] == 0.75
    assert seconds[phases.OTHER] == 0.25
    assert sum(seconds.values()) == 1.0


def test_same_outputs_names_added_fields_and_catches_changed_ones():
    import same_outputs
    old = {"config": {"seed": 1, "epoch_seconds": [1.0]}, "runs": [{"a": 1}]}
    assert same_outputs.same_json(old, old) == "same"
    added = {"config": {"seed": 1, "network": None}, "runs": [{"a": 1, "b": 2}]}
    assert same_outputs.same_json(same_outputs.without_timings(old), added) == (
        "same, and new fields: config.network, runs.b")
    assert same_outputs.same_json(old, {"config": {"seed": 2}, "runs": [{"a": 1}]}) == "DIFFERS"
    assert same_outputs.same_json(old, {"config": {"seed": 1}}) == "DIFFERS"  # a field gone
