"""Reading .npz archives safely: headers first, nothing unpickled, one line naming the
file and the fix when anything is wrong."""
import zipfile

import numpy as np

from machinery.errors import ScriptError


def array_dtype(archive, key):
    """The dtype in the header of one array of an open .npz, without reading the array."""
    with archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        return read_header(member)[2]


def check_npz(path, advice, keys=("arr_0",), kind="KMNIST"):
    """Read only the headers of the arrays in an .npz; refuse anything numpy would unpickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [key for key in keys if f"{key}.npy" not in archive.namelist()]
            if missing:
                raise ScriptError(
                    f"{path} has no array '{missing[0]}' (it holds {archive.namelist()}), "
                    f"so it is not a {kind} file: {advice}"
                )
            dtypes = [array_dtype(archive, key) for key in keys]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is truncated or not an .npz archive ({err}): {advice}") from None
    if any(dtype.hasobject for dtype in dtypes):
        raise ScriptError(
            f"{path} holds Python objects, which would have to be unpickled to be read; "
            f"refusing it: {advice}"
        )


def read_npz(path, advice, keys=("arr_0",), kind="KMNIST"):
    """The arrays `keys` of an .npz, checked first (one array alone for KMNIST's files)."""
    check_npz(path, advice, keys, kind)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = [archive[key] for key in keys]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is damaged ({err}): {advice}") from None
    return arrays[0] if len(keys) == 1 else arrays
