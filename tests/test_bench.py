"""bench/benchmark.py's arithmetic: ratios and target verdicts from known medians (no timing)."""
import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "bench" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def medians(images_per_second, peak_rss_mb, val_accuracy=0.9, spread=0.01, diagnosis=0.0):
    return {"images_per_second": images_per_second, "seconds_per_epoch": 2.0,
            "first_epoch_seconds": 3.0, "evaluation_seconds": 0.5,
            "diagnosis_seconds": diagnosis, "training_seconds": 6.0,
            "peak_rss_mb": peak_rss_mb, "val_accuracy": val_accuracy,
            "val_accuracy_spread": spread, "test_accuracy": 0.9, "test_accuracy_spread": 0.0}


def test_targets_are_judged_from_the_ratios():
    results = {"lesson": medians(1100, 900), "default": medians(1000, 1000, 0.900, diagnosis=1.0),
               "fast": medians(2100, 700, 0.904), "pytorch-bf16": medians(2000, 700)}
    lines = benchmark.targets(results).splitlines()
    assert "| fast images/s vs default >= 2.0 | 2.10 | yes |" in lines
    assert "| fast images/s vs pytorch bf16 >= 1.2 | 1.05 | no |" in lines
    assert "| fast peak memory vs default <= 0.8 | 0.70 | yes |" in lines
    assert "| default images/s vs lesson (the machinery's cost) >= 0.95 | 0.91 | no |" in lines
    # |0.904 - 0.900| = 0.4 points, within the larger spread of 1 point
    assert ("| fast mean val accuracy within the repeats' spread of default "
            "| 0.40 points (spread 1.00) | yes |") in lines
    # 1 s of diagnosis against 25 epochs of 2 s: 0.02
    assert ("| BatchNormalization diagnosis vs a 25-epoch run's training <= 0.03 "
            "| 0.020 | yes |") in lines


def test_table_gives_each_variant_its_ratio_to_default():
    table = benchmark.table({"default": medians(1000, 1000), "fast": medians(2500, 600)})
    assert "| fast | 2,500 | 2.50 |" in table and "| 600 | 0.60 |" in table


def test_targets_skip_variants_that_were_not_run():
    lines = benchmark.targets({"default": medians(1000, 1000), "fast": medians(1500, 900)})
    assert "pytorch" not in lines and "lesson" not in lines


def test_medians_take_the_middle_run_and_accuracy_the_mean_and_spread():
    runs = [dict(medians(v, 100, val_accuracy=a), versions={})
            for v, a in ((3, 0.80), (1, 0.90), (2, 0.94))]
    summary = benchmark.medians(runs)
    assert summary["images_per_second"] == 2
    assert abs(summary["val_accuracy"] - 0.88) < 1e-12  # (0.80 + 0.90 + 0.94) / 3
    assert abs(summary["val_accuracy_spread"] - 0.14) < 1e-12


def test_machine_line_says_which_torch_build_ran():
    # torch.version.cuda is None in PyTorch's CPU-only build, "13.0" in PyPI's Linux wheel.
    cpu = benchmark.machine([{"tensorflow": "2.21.0"}, {"torch": "2.13.0+cpu", "torch_cuda": None}])
    cuda = benchmark.machine([{"torch": "2.13.0", "torch_cuda": "13.0"}])
    assert "tensorflow 2.21.0, torch 2.13.0+cpu (CPU-only build)" in cpu
    assert cuda.endswith("; torch 2.13.0 (CUDA 13.0 build)")
    assert "torch_cuda" not in cpu + cuda
    assert "torch" not in benchmark.machine([{"tensorflow": "2.21.0"}]).split(";")[1]
