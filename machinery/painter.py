"""Pictures drawn beside the run in a Python process of their own, on the core TensorFlow
leaves free: matplotlib holds Python's lock while it draws, so a thread gained too little
(bench/records/2026-12-07-smoke-run.md). Where the process cannot start, fails or takes
too long, the run draws the picture itself, byte for byte alike. The process ignores
Ctrl-C (the run's), ends with the run, and removes a picture nobody will take. Imports
neither TensorFlow nor matplotlib: the process imports this module too."""
import atexit
import contextlib
import itertools
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVE = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
         "from machinery import painter; painter.serve()")
WAIT_S = 60  # for one picture, before the run draws it itself
POLL_S = 0.1  # waits in steps, so that Ctrl-C is not held up (on Windows too)


def launch():
    """The other process, or None where it cannot start."""
    try:
        return subprocess.Popen([sys.executable, "-c", SERVE], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    except OSError:
        return None


class Painter:
    """draw() asks the other process for function(*args, path) and returns at once;
    drew() waits for the answer."""

    def __init__(self):
        self.asked, self.answers, self.ended = {}, {}, False
        self.numbers = itertools.count()  # each request its own, never reused
        self.to_send, self.told = queue.Queue(), queue.Queue()
        self.process = launch()
        if self.process is None:  # the run draws every picture itself
            self.ended = True
            return
        # Threads of their own: a large picture's data must not block the run on a
        # full pipe while the process is still drawing the one before.
        threading.Thread(target=self._send, args=(self.process.stdin,), daemon=True).start()
        threading.Thread(target=self._listen, args=(self.process.stdout,), daemon=True).start()
        atexit.register(self.stop)

    def _send(self, stream):
        with contextlib.suppress(OSError, ValueError):  # the process is gone
            while (job := self.to_send.get()) is not None:
                stream.write(job)
                stream.flush()
            stream.close()

    def _listen(self, stream):
        with contextlib.suppress(OSError, ValueError):
            for line in stream:
                number, _, status = line.decode(errors="replace").strip().partition(" ")
                if number.isdigit():  # anything else is not the process's answer
                    self.told.put((int(number), status == "drew"))
        self.told.put(None)  # the process ended

    def draw(self, function, args, path):
        """The request's number for drew(), or None without the process. The function
        goes by reference, as pickle sends one: the process imports its module."""
        if self.ended:
            return None
        number = next(self.numbers)
        try:
            job = pickle.dumps((number, function, args, str(path)))
        except (pickle.PicklingError, AttributeError, TypeError):  # not a module's function
            return None
        self.asked[number] = Path(path)
        self.to_send.put(job)
        return number

    def drew(self, number):
        """Whether the process drew request `number`; False (draw it yourself) when there
        was none, or it failed, ended or took too long."""
        if number not in self.asked:
            return False
        try:
            drawn = self._answer(number)
        except BaseException:  # Ctrl-C: end the process before the caller cleans up
            self.stop()
            raise
        self.asked.pop(number)
        if drawn is None:  # too long: nothing more from the process
            self.stop()
        return bool(drawn)

    def _answer(self, number):
        deadline = time.monotonic() + WAIT_S
        while number not in self.answers and not self.ended:
            if time.monotonic() > deadline:
                return None
            with contextlib.suppress(queue.Empty):
                told = self.told.get(timeout=POLL_S)
                if told is None:
                    self.ended = True
                else:
                    self.answers[told[0]] = told[1]
        return self.answers.get(number, False)

    def close(self):
        """No more pictures: the process ends on its own (stop(), at exit, makes sure)."""
        self.to_send.put(None)

    def stop(self):
        """End the process now; remove each picture it was asked for that nobody took."""
        process, self.process, self.ended = self.process, None, True
        if process is None:
            return
        atexit.unregister(self.stop)
        process.kill()
        process.wait()
        for path in self.asked.values():
            path.unlink(missing_ok=True)


def serve():
    """The process: draws each picture asked for on stdin, and says so on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group
    jobs, answers = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # what a library prints is not an answer
    while True:
        try:
            number, function, args, path = pickle.load(jobs)  # imports plot_history
        except (EOFError, OSError, pickle.UnpicklingError, AttributeError, ImportError):
            return
        try:
            function(*args, path)
            status = "drew"
        except Exception:  # the run draws it again itself, and reports what fails
            status = "failed"
        try:
            answers.write(f"{number} {status}\n".encode())
            answers.flush()
        except OSError:  # the run is gone: nobody will take the picture
            Path(path).unlink(missing_ok=True)
            return
