"""Where a smoke run's seconds go: py-spy's raw samples (`py-spy record --idle --threads
--format raw`) of the main thread, each put in the first phase whose frames it holds.
No timing here, so tests/test_bench.py checks it from known stacks."""

# (phase, frames that put a sample in it), first match wins: an import inside fit is
# an import, tracing inside evaluate is tracing, a callback's work is a callback's.
PHASES = (
    ("imports", (";_find_and_load (",)),
    ("tracing (any tf.function)", (";trace_function (", ".get_concrete_function (",
                                   ";Function._initialize (")),
    ("fit: callbacks (backup, statistics monitor, log)", ("callbacks/callback_list.py",)),
    ("pictures", (";take_all (", ";plot_history (plot_history.py")),
    ("evaluate, predict, diagnosis", (";test (model_batchnorm.py", ";diagnose (")),
    ("saving (model, history, run.json)", (";save_run (",)),
    ("fit: validation", (".fit (",), (".evaluate (",)),
    ("fit: training steps", (".fit (",)),
    ("data (load, check, cut)", (";load_data (", ";for_run (machinery/settings.py")),
    ("start-up (folder, devices, seeds) and model", (";prepared (", ";make_model (")),
)
OTHER = "other (interpreter start and exit, flags, Python's own)"


def phase_of(stack):
    """The phase of one sample's stack, a ';'-separated list of 'function (file:line)'
    (a needle that begins with ';' matches at the start of a frame)."""
    stack = ";" + stack
    for phase, *needs in PHASES:
        if all(any(text in stack for text in need) for need in needs):
            return phase
    return OTHER


def seconds_per_phase(raw, rate):
    """{phase: seconds} of the main thread, from py-spy's raw lines 'stack count'."""
    seconds = {phase: 0.0 for phase, *_ in PHASES}
    seconds[OTHER] = 0.0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack.split(";", 1)[0].endswith("MainThread"):
            continue
        seconds[phase_of(stack)] += int(count) / rate
    return seconds


def table(seconds):
    total = sum(seconds.values())
    lines = ["| phase (py-spy, main thread) | seconds | share |", "|---|---:|---:|"]
    lines += [f"| {phase} | {value:.1f} | {value / total:.0%} |"
              for phase, value in seconds.items()]
    lines.append(f"| total | {total:.1f} | 100% |")
    return "\n".join(lines)
