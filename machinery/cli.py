"""The command line: the flags (flags.py) checked together, one-line errors and exit codes, Ctrl-C
and SIGTERM (signals.py). Imports no TensorFlow, so a bad flag is told at once. The flags are
parsed here and never changed: what a run derives from them is its settings (settings.py)."""
import importlib.util
import sys

import plot_history
from machinery import signals
from machinery.comparisons import DEFAULT, KINDS
from machinery.datasets import OWN
from machinery.errors import Interrupted, ScriptError, interruption_behind
from machinery.flags import build_parser


def refuse_flags_beside_predict(parser, args):
    """--predict trains nothing, so a training flag beside it would silently do nothing."""
    defaults = vars(parser.parse_args([]))
    given = [f"--{name.replace('_', '-')}" for name, value in vars(args).items()
             if name != "predict" and value != defaults[name]]
    if given:
        parser.error(f"--predict takes no other flag (got {', '.join(given)})")


def parse_args(argv, defaults):
    """The flags, checked; `defaults` are the lesson's constants the flags default to."""
    parser = build_parser(defaults)
    args = parser.parse_args(argv)
    if args.predict is not None:
        refuse_flags_beside_predict(parser, args)
        return args
    if args.compare and args.no_batchnorm:
        parser.error("--compare chooses which of its networks have BatchNormalization; "
                     "drop --no-batchnorm")
    if args.sync_bn and not args.distribute:
        parser.error("--sync-bn shares statistics between replicas: add --distribute")
    check_several(parser, args)
    check_comparison(parser, args, defaults)
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ScriptError("--tensorboard needs the tensorboard package, which writes and "
                          "shows the logs: pip install tensorboard")
    if args.dataset == OWN and args.data_dir is None:
        parser.error("--dataset own needs --data-dir FOLDER holding data.npz "
                     "(docs/data.md)")
    if args.redownload and args.data_dir is not None:
        parser.error("--redownload replaces the files in the Keras cache, which --data-dir "
                     "never reads: drop one of the two")
    return args


def check_several(parser, args):
    """Several --learning-rate values only for --compare's own question, several
    --batch-size values only for --compare batch-size; each value once."""
    if len(args.learning_rate) > 1 and args.compare != DEFAULT:
        parser.error("several --learning-rate values need --compare, which trains each "
                     "with and without BatchNormalization; give one rate, or add --compare")
    if len(args.batch_size) > 1 and args.compare != "batch-size":
        parser.error("several --batch-size values need --compare batch-size, which trains "
                     "at each; give one, or add --compare batch-size")
    for flag, values in (("--learning-rate", args.learning_rate),
                         ("--batch-size", args.batch_size)):
        repeated = sorted({value for value in values if values.count(value) > 1})
        if repeated:
            parser.error(f"{flag} {repeated[0]:g} is given twice: give each once")


def check_comparison(parser, args, defaults):
    """What a comparison asks of the other flags."""
    if args.compare == "batch-size" and args.batch_size != [defaults["batch_size"]] \
            and len(args.batch_size) == 1:
        parser.error("--compare batch-size compares several batch sizes: give two or more "
                     "--batch-size values, or none for 16, 64 and 250")
    tracking = args.track_layer_inputs or args.layer_inputs_of is not None
    if tracking and args.compare and not KINDS[args.compare].lesson_layers:
        parser.error(f"--track-layer-inputs follows the lesson's layers, which --compare "
                     f"{args.compare} changes: drop it")


def check_flags_first(argv, defaults):
    """parse_args' checks, before the caller's slow imports: --help, or flags it refuses, end the
    process at once (the one line, the exit code); good flags return, for main to parse again."""
    code = run(lambda argv: parse_args(argv, defaults), argv)
    if code:
        sys.exit(code)


def stderr_unfiltered():
    """Undo a stderr filter (machinery/quiet.py, loaded with TensorFlow) that a signal cut
    short, so that the last line reaches the user."""
    quiet = sys.modules.get("machinery.quiet")
    if quiet is not None:
        quiet.restore_stderr()


def run(main, argv=None):
    """Call main(argv) for the command line: one-line errors, exit codes, no tracebacks."""
    try:
        with signals.sigterm_as_ctrl_c():
            try:
                main(argv)
                signals.raise_if_swallowed()  # never success after a Ctrl-C or SIGTERM
            finally:
                stderr_unfiltered()
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
        err = signals.stopped(stop)  # before training started or after it ended
        print(err, file=sys.stderr)
        return err.code
    return 0
