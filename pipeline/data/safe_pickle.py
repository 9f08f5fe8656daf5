"""Reading pickled dataset files without letting them run code.

CIFAR's "python version" batches and the classic ``mnist.pkl.gz`` are pickles: plain
``pickle.load`` on a file under ``data.root`` would run whatever a crafted file asks for
(``os.system`` through ``__reduce__``). These formats need only builtin containers, bytes,
numbers and numpy arrays, so the unpickler resolves exactly the globals that rebuild a numpy
array and refuses every other one, naming the file and the global.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import IO, Any

from pipeline.errors import PipelineError, one_line

# (module, name) pairs a numpy array or scalar pickle refers to; numpy 2 moved numpy.core to numpy._core
ALLOWED = {
    (core, name)
    for core in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {("numpy", "ndarray"), ("numpy", "dtype")}


class _ArraysOnly(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused global {module}.{name}")


def load_pickle(f: IO[bytes], source: Path | str) -> Any:
    """Unpickle containers, bytes, numbers and numpy arrays from ``f``; anything else is one PipelineError line."""
    try:
        return _ArraysOnly(f, encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise PipelineError(f"{source}: not a plain data pickle ({exc}); only containers, numbers, bytes and numpy "
                            "arrays are read from dataset files") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, MemoryError) as exc:
        raise PipelineError(f"{source}: truncated or corrupt pickle ({type(exc).__name__}: {one_line(exc)})") from None
