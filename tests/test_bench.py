"""bench/benchmark.py's arithmetic: ratios and target verdicts from known medians (no timing)."""
import importlib.util

from conftest import ROOT

spec = importlib.util.spec_from_file_location("benchmark", ROOT / "bench" / "benchmark.py")
benchmark = importlib.util.module_from_spec(spec)
spec.loader.exec_module(benchmark)


def medians(images_per_second, peak_rss_mb, val_accuracy=0.9):
    return {"images_per_second": images_per_second, "seconds_per_epoch": 1.0,
            "first_epoch_seconds": 2.0, "evaluation_seconds": 0.5,
            "peak_rss_mb": peak_rss_mb, "val_accuracy": val_accuracy, "test_accuracy": 0.9}


def test_targets_are_judged_from_the_ratios():
    results = {"default": medians(1000, 1000, 0.900), "fast": medians(2100, 700, 0.904),
               "pytorch": medians(1200, 800), "pytorch-bf16": medians(2000, 700)}
    lines = benchmark.targets(results).splitlines()
    assert "| fast images/s vs default >= 2.0 | 2.10 | yes |" in lines
    assert "| fast peak memory vs default <= 0.6 | 0.70 | no |" in lines
    assert "| default images/s vs pytorch float32 >= 0.9 | 0.83 | no |" in lines
    assert "| fast images/s vs pytorch bf16 >= 1.0 | 1.05 | yes |" in lines
    assert "| fast val accuracy within 0.5 points of default | 0.40 points | yes |" in lines


def test_table_gives_each_variant_its_ratio_to_default():
    table = benchmark.table({"default": medians(1000, 1000), "fast": medians(2500, 600)})
    assert "| fast | 2,500 | 2.50 |" in table and "| 600 | 0.60 |" in table


def test_targets_skip_variants_that_were_not_run():
    lines = benchmark.targets({"default": medians(1000, 1000), "fast": medians(1500, 900)})
    assert "pytorch" not in lines


def test_medians_take_the_middle_run():
    runs = [dict(medians(v, 100), versions={}) for v in (3, 1, 2)]
    assert benchmark.medians(runs)["images_per_second"] == 2
