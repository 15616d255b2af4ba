"""Making finn-plus importable and usable outside its own ``finn`` CLI.

Why bnnflow runs FINN's step functions itself instead of ``build_dataflow_cfg``
for the compile stage: the builder imports ``finn.xsi`` (the RTL simulator
binding), which raises unless Vivado is installed, and its final bookkeeping
(``exit_buildflow``) asks for the Vivado root; so without Vivado the builder
cannot run to completion. The compile stage also needs to act *between*
steps (the fit-to-board folding search works on the specialised graph and
writes the folding JSON that ``step_apply_folding_config`` then applies) and
to verify at matching points. So bnnflow calls FINN's registered step
functions (``build_dataflow_step_lookup``) in the builder's order with a real
``DataflowBuildConfig``, saving every intermediate model under the names the
builder uses, which is what lets ``bnnflow bitstream`` hand the folder to
``build_dataflow_cfg(start_step=...)`` unchanged once Vivado is there.

Importing the step functions still needs ``finn.xsi`` to resolve its lazy
names. Without Vivado those names are bound to stubs that raise a clear error
if anything tries to simulate RTL (nothing in the compile stage does); with
Vivado the real module is left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from bnnflow.errors import BnnflowError

_prepared = False


def _rtl_simulation_unavailable(*_args: Any, **_kwargs: Any) -> Any:
    raise BnnflowError(
        "RTL simulation needs Vivado (XILINX_VIVADO is not set); run `bnnflow bitstream` on a Vivado host"
    )


def prepare_finn(build_dir: str | os.PathLike[str] | None = None) -> Path:
    """Initialise FINN's settings once per process; returns FINN_BUILD_DIR.

    FINN writes generated code under FINN_BUILD_DIR; a user's setting is kept,
    otherwise a per-user folder in the temp dir (not ``./FINN_TMP`` in whatever
    folder the user happens to run from).
    """
    global _prepared
    if build_dir is not None:
        os.environ["FINN_BUILD_DIR"] = str(Path(build_dir).absolute())
    elif not os.environ.get("FINN_BUILD_DIR"):
        os.environ["FINN_BUILD_DIR"] = str(Path(tempfile.gettempdir()) / f"bnnflow-finn-{os.getuid()}")
    path = Path(os.environ["FINN_BUILD_DIR"])
    path.mkdir(parents=True, exist_ok=True)
    if _prepared:
        return path

    from finn.util.settings import initialize_dummy_settings

    import bnnflow._compat  # noqa: F401  (torch/brevitas shims before FINN pulls brevitas in)

    initialize_dummy_settings()
    if not os.environ.get("XILINX_VIVADO"):
        import finn.xsi as xsi

        for name in xsi._LAZY_NAMES:
            if name not in vars(xsi):
                setattr(xsi, name, _rtl_simulation_unavailable)
    # finn-plus 1.6.1 registers its HW Reshape (which InferReshape creates for
    # TFC's flatten) only when the module is imported, and its registry
    # __init__ does not import it; without this, Python execution of the
    # hardware-layer graph hands the node to onnxruntime, which rejects it.
    import finn.custom_op.fpgadataflow.reshape  # noqa: F401

    _prepared = True
    return path


def step_functions() -> dict[str, Any]:
    """FINN's registered build steps, by name."""
    prepare_finn()
    from finn.builder.build_dataflow_steps import build_dataflow_step_lookup

    return build_dataflow_step_lookup


@contextlib.contextmanager
def quiet_finn(sink: IO[str]) -> Iterator[None]:
    """Send FINN's prints, log records and warnings to ``sink`` for the duration."""
    handler = logging.StreamHandler(sink)
    loggers = [logging.getLogger(name) for name in ("finn_logger", "finn", "qonnx", "")]
    saved = [(lg, lg.level, lg.handlers[:], lg.propagate) for lg in loggers]
    try:
        for lg in loggers:
            lg.handlers = [handler]
            lg.propagate = False
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(sink),
        ):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level, handlers, propagate in saved:
            lg.setLevel(level)
            lg.handlers = handlers
            lg.propagate = propagate
