"""--predict MODEL IMAGE...: a trained model on your own images (docs/predict.md). Each image is
prepared as the converter's training images (images.py), then scaled by the lesson's preprocess();
class names and preparation come from the model's run.json. All inputs first checked; no writes."""
import json
import zipfile
from pathlib import Path

import numpy as np

from machinery import images as preparation
from machinery.datasets import DATASETS, KMNIST_CLASS_NAMES, class_names
from machinery.errors import ScriptError, UsageError
from machinery.files import MODEL, RUN_JSON
from machinery.quiet import filtered_stderr, keras

SIDE = preparation.SIDE  # the training images' width and height
TOP = 3  # classes shown per image
INVERTED = " (inverted: dark on light)"
DOCS = "docs/predict.md"


def first_line(err):
    """An exception's message as one line (Keras' and Pillow's can run to several)."""
    return (str(err).strip().splitlines() or [""])[0]


def model_file(source):
    """The .keras file of `source`: a run's output folder, or the file itself."""
    path = Path(source)
    if path.is_dir():
        if (path / MODEL).is_file():
            return path / MODEL
        runs = sorted(str(sub) for sub in path.iterdir() if (sub / MODEL).is_file())
        if runs:  # the top folder of a --compare run: one model per sub-folder
            raise ScriptError(f"{path} holds no {MODEL}, its sub-folders do: give one of "
                              f"them ({', '.join(runs)})")
        raise ScriptError(f"{path} holds no {MODEL}: give the output folder of a finished "
                          f"run or a .keras file")
    if not path.is_file():
        raise ScriptError(f"--predict {path}: no such folder or file: give a run's output "
                          f"folder or its {MODEL}")
    if path.suffix != ".keras":
        raise ScriptError(f"--predict {path} is neither a folder nor a .keras file: give a "
                          f"run's output folder or its {MODEL}")
    return path


def display(pair):
    """A class's name as shown: KMNIST's character with its romanization, else the name."""
    name, plain = pair
    return name if name == plain else f"{name} ({plain})"


def names_beside(path):
    """(names, where they came from, the run's record): the class names in the run.json
    beside the model, or KMNIST's, the lesson's, when there is no run.json ({})."""
    record = path.parent / RUN_JSON
    if not record.is_file():
        return ([display(p) for p in KMNIST_CLASS_NAMES],
                "KMNIST's (no run.json beside the model)", {})
    try:
        run = json.loads(record.read_text(encoding="utf-8"))
        config = run["config"]
        # A run.json written before run.json recorded the names: the data set's.
        pairs = config.get("class_names") or class_names(
            run["dataset"], DATASETS[run["dataset"]]["classes"])
        names = [display(pair) for pair in pairs]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as err:
        raise ScriptError(f"{record} cannot be read for the class names ({type(err).__name__}: "
                          f"{first_line(err)}): give the model with its own run's "
                          f"{RUN_JSON} beside it") from None
    return names, f"from {record} (dataset {run['dataset']})", run


def read_image(file):
    """(uint8 (28, 28) light on dark, whether it was inverted): the image in `file`
    prepared by machinery/images.py."""
    path = Path(file)
    if not path.is_file():
        raise ScriptError(f"{path}: no such file: check the image's path")
    try:
        return preparation.prepare_file(path)
    except preparation.UNREADABLE as err:
        raise ScriptError(f"{path} is not an image Pillow can read ({first_line(err)}): give "
                          "a PNG, JPEG or other image file") from None


def how_prepared(run, path):
    """The header's words on the images' preparation, and a note (or None) when the
    model's training images were not recorded as prepared this same way."""
    recorded = run.get("config", {}).get("image_preparation")
    if recorded == preparation.PREPARATION:
        return "; images prepared as its training images were (run.json)", None
    record = path.parent / RUN_JSON
    reason = (f"{record} (dataset {run['dataset']}) records "
              f"{'a preparation this version does not make' if recorded else 'none'}" if run
              else f"no {RUN_JSON} beside the model")
    return "", (f"Note: how this model's training images were prepared is unknown ({reason}): "
                "each image is made light on dark, as KMNIST and MNIST store theirs; a "
                "model trained on dark-on-light images predicts near chance on them "
                f"({DOCS})")


def load_model(path, names, where):
    """The model, checked to take 28x28 grayscale images and to have one output per name."""
    fix = f"give the {MODEL} a run of this script wrote"
    if not zipfile.is_zipfile(path):  # Keras would call it "File not found"
        raise ScriptError(f"{path} is truncated or not a Keras model (a .keras file is a "
                          f"zip archive): {fix}")
    try:
        with filtered_stderr():
            model = keras.models.load_model(path, compile=False)
    except Exception as err:  # Keras raises many kinds for a damaged or foreign file
        raise ScriptError(f"{path} cannot be loaded as a Keras model ({type(err).__name__}: "
                          f"{first_line(err)}): {fix}") from None
    if tuple(model.input_shape[1:]) != (SIDE, SIDE, 1):
        raise ScriptError(f"{path} takes inputs of shape {tuple(model.input_shape[1:])}, not "
                          f"28x28 grayscale images {(SIDE, SIDE, 1)}: {fix}")
    if model.output_shape[-1] != len(names):
        raise ScriptError(f"{path} has {model.output_shape[-1]} outputs but "
                          f"{len(names)} class names were found, {where}: keep the model "
                          f"beside its own run's {RUN_JSON}")
    return model


def ranked(probabilities, names):
    """'name 97.3%, name 1.2%, name 0.5%': the TOP most probable classes, most first."""
    order = np.argsort(-probabilities, kind="stable")[:TOP]
    return ", ".join(f"{names[i]} {probabilities[i]:.1%}" for i in order)


def classify(arguments, preprocess):
    """--predict MODEL IMAGE...: every input checked, then one line per image on stdout.
    `preprocess` is the lesson's own scaling of uint8 (N, 28, 28) images."""
    source, *files = arguments
    if not files:
        raise UsageError(f"--predict {source} names no image: give one or more after the "
                         f"model, as in --predict OUTPUT_DIR a.png b.jpg ({DOCS})")
    path = model_file(source)
    pixels, inverted = zip(*map(read_image, files))
    names, where, run = names_beside(path)
    model = load_model(path, names, where)
    with filtered_stderr():  # predict's tf.data pipeline logs its start-up
        probabilities = model.predict(preprocess(np.stack(pixels)), verbose=0)
    prepared, note = how_prepared(run, path)
    print(f"{path}: {len(names)} classes, names {where}{prepared}")
    if note:
        print(note)
    for file, p, flipped in zip(files, probabilities, inverted):
        print(f"{file}: {ranked(p, names)}{INVERTED if flipped else ''}")
    return {"model": str(path), "names": names, "probabilities": probabilities,
            "inverted": list(inverted)}
