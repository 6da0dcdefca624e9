"""The command line: the flags (flags.py) checked together, one-line errors and exit
codes, Ctrl-C and SIGTERM. Imports no TensorFlow, so that a bad flag is told at once."""
import contextlib
import importlib.util
import signal
import sys

import plot_history
from machinery.datasets import OWN
from machinery.errors import (Interrupted, ScriptError, TerminationSignal,
                              interruption_behind)
from machinery.flags import COMPARE_SEED, DEFAULT_LAYER, build_parser


def refuse_flags_beside_predict(parser, args):
    """--predict trains nothing, so a training flag beside it would silently do nothing."""
    defaults = vars(parser.parse_args([]))
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if name != "predict" and value != defaults[name]]
    if given:
        parser.error(f"--predict takes no other flag (got {', '.join(given)})")


def parse_args(argv, defaults):
    """The flags, checked; `defaults` also gives the lesson's verbosity for a terminal."""
    parser = build_parser(defaults)
    args = parser.parse_args(argv)
    if args.predict is not None:
        refuse_flags_beside_predict(parser, args)
        return args
    if args.verbose is None:
        args.verbose = defaults["verbosity"] if sys.stdout.isatty() else 2
    if args.compare and args.no_batchnorm:
        parser.error("--compare already trains the variant without BatchNormalization; "
                     "drop --no-batchnorm")
    if args.sync_bn and not args.distribute:
        parser.error("--sync-bn shares statistics between replicas: add --distribute")
    if args.compare and args.seed is None:
        args.seed = COMPARE_SEED
    if args.compare:  # the comparison shows the batch-statistics curves, and the inputs
        args.track_batch_stats = args.track_layer_inputs = True
    check_learning_rates(parser, args)
    args.track_layer_inputs = args.track_layer_inputs or args.layer_inputs_of is not None
    args.layer_inputs_of = args.layer_inputs_of or DEFAULT_LAYER
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ScriptError("--tensorboard needs the tensorboard package, which writes and "
                          "shows the logs: pip install tensorboard")
    if args.dataset == OWN and args.data_dir is None:
        parser.error("--dataset own needs --data-dir FOLDER holding data.npz "
                     "(docs/data.md)")
    return args


def check_learning_rates(parser, args):
    """Several rates only under --compare, each once; args.learning_rate is the first
    (the one a single run trains with), args.learning_rates all of them."""
    rates = args.learning_rates = args.learning_rate
    if len(rates) > 1 and not args.compare:
        parser.error("several --learning-rate values need --compare, which trains each "
                     "with and without BatchNormalization; give one rate, or add --compare")
    repeated = sorted({rate for rate in rates if rates.count(rate) > 1})
    if repeated:
        parser.error(f"--learning-rate {repeated[0]:g} is given twice: give each rate once")
    args.learning_rate = rates[0]


def check_flags_first(argv, defaults):
    """The flags checked as parse_args checks them, before the caller's slow imports:
    --help, or flags it refuses, end the process at once (the one line, the exit code);
    good flags return, and main parses them again."""
    code = run(lambda argv: parse_args(argv, defaults), argv)
    if code:
        sys.exit(code)


def raise_termination(signum, frame):
    raise TerminationSignal()


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM (timeout, systemd, Slurm, Kubernetes) stops the run as Ctrl-C does, so
    that what was finished is written; only the main thread may set a handler."""
    try:
        previous = signal.signal(signal.SIGTERM, raise_termination)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stderr_unfiltered_at_the_end():
    """However the block ends, undo a stderr filter (machinery/quiet.py, loaded with
    TensorFlow) that a signal cut short, so that the last line reaches the user."""
    try:
        yield
    finally:
        quiet = sys.modules.get("machinery.quiet")
        if quiet is not None:
            quiet.restore_stderr()


def run(main, argv=None):
    """Call main(argv) for the command line: one-line errors, exit codes, no tracebacks."""
    try:
        with sigterm_as_ctrl_c(), stderr_unfiltered_at_the_end():
            main(argv)
    except Interrupted as err:
        print(err, file=sys.stderr)
        return err.code
    except (ScriptError, plot_history.HistoryError) as err:  # the helper stands alone
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except BaseException as err:
        stop = interruption_behind(err)
        if stop is None:  # a genuine bug: its traceback
            raise
        what, code = (("Terminated (SIGTERM)", 143) if isinstance(stop, TerminationSignal)
                      else ("Interrupted", 130))
        print(f"{what} before training started or after it ended; the backup, if any, is "
              "kept: run the same command again.", file=sys.stderr)
        return code
    return 0
