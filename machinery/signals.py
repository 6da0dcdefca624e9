"""Ctrl-C and SIGTERM: the handlers, installed, held and released here only, and the
one-line error that tells the user what was kept. SIGTERM (a timeout, systemd, Slurm,
Kubernetes) stops a run as Ctrl-C does, so that what was finished is written."""
import contextlib
import signal

from machinery.errors import Interrupted, Terminated, TerminationSignal

# The signals a handler has raised as an exception during this run. TensorFlow's C++ can
# swallow one that lands inside it (a SystemError printed, the run going on), so the run
# looks again at the next epoch's end, before training and before it reports success.
# Each run starts with none (new_run): an earlier run's in the same process was its own.
RAISED = []


def new_run():
    RAISED.clear()


def as_exception(signum):
    RAISED.append(signum)
    return TerminationSignal() if signum == signal.SIGTERM else KeyboardInterrupt()


def raise_termination(signum, frame):
    raise as_exception(signum)


def raise_if_swallowed():
    """Raise anew a Ctrl-C or SIGTERM whose exception something caught and dropped."""
    if RAISED:
        raise as_exception(RAISED.pop())


@contextlib.contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM raises as Ctrl-C does for the block; only the main thread may set a handler."""
    new_run()  # a command line's run, --predict's included
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
def sigterm_handler_kept():
    """SIGTERM's handler as it was before the block: MultiWorkerMirroredStrategy's
    preemption notifier takes SIGTERM over and only logs it."""
    handler = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError, TypeError):  # not the main thread / not Python's
            signal.signal(signal.SIGTERM, handler)


class SignalsWaitForTheBackup:
    """Ctrl-C and SIGTERM stop training where they land, except between an epoch's log row and its
    backup: there they wait until the backup holds that epoch, so log, backup and message agree.
    Takes over only signals Python turns into exceptions: one ignored (nohup) stays ignored."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.holding, self.pending = False, None

    def handle(self, signum, frame):
        self.pending = signum
        if not self.holding:
            self.act()

    def act(self):
        signum, self.pending = self.pending, None
        raise as_exception(signum)

    def hold(self, *_):
        self.holding = True

    def release(self, *_):
        self.holding = False
        if self.pending is not None:
            self.act()
        raise_if_swallowed()

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        try:
            for signum in self.SIGNALS:
                if callable(signal.getsignal(signum)):
                    previous[signum] = signal.signal(signum, self.handle)
        except ValueError:  # only the main thread may set a handler
            pass
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def stopped(stop, epochs=None, written=()):
    """The error for the Ctrl-C or SIGTERM `stop` (Interrupted, exit 130; Terminated, 143) after
    `epochs` completed epochs and the files `written`; `epochs` None: not during training."""
    error, what = ((Terminated, "Terminated (SIGTERM)") if isinstance(stop, TerminationSignal)
                   else (Interrupted, "Interrupted"))
    if epochs is None:
        return error(f"{what} before training started or after it ended; the backup, if any, "
                     "is kept: run the same command again.")
    where = f"; wrote {', '.join(map(str, written))}" if written else ""
    again = ("resume from the backup" if epochs else
             "start at epoch 1 (no epoch was completed)")
    return error(f"{what} after {epochs} completed epoch(s){where}. "
                 f"Run the same command again to {again}.")
