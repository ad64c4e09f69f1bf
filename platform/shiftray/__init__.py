"""shiftray: domain adaptation and transfer learning on Ray.

The Python API (`shiftray.api`): `load_job`, `load_data`, `fit`, `tune`, `load` (a trained
run, to `predict`), `serve`. The command line (`shiftray run|tune|serve ...`) calls the same
functions.
"""

from shiftray.api import Model, RunResult, Server, fit, load, load_data, load_job, serve, tune

__all__ = ["Model", "RunResult", "Server", "fit", "load", "load_data", "load_job", "serve", "tune"]
