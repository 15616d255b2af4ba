"""FINN's builder form without FINN's builder: a list of steps ``step(model, cfg) -> model`` and one runner.

Why not ``build_dataflow_cfg`` itself: it imports ``finn.xsi``, which raises
without Vivado, and its final bookkeeping (``exit_buildflow``) asks for the
Vivado root (finn_env.py). So bnnflow runs FINN's registered step functions
(``build_dataflow_step_lookup``) itself, in the builder's order, with a real
``DataflowBuildConfig``, and saves each of their models under the name the
builder gives it (``intermediate_models/<step>.onnx``); that is what lets
FINN's builder resume from the folder (``start_step``) once Vivado is there.

bnnflow's own steps sit between FINN's. Each names the FINN step it belongs
to (``finn_step``): a step that amends FINN's step of the same name, or runs
after it; the list's ``finn_step`` names then follow the order of
``default_build_dataflow_steps``, which tests/test_hls.py checks. A step that
rewrites the graph (``rewrites``) has its model saved under its FINN step's
name, so the intermediate models are the graphs the next step got.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bnnflow.errors import BnnflowError
from bnnflow.finnlib.finn_env import quiet_finn, step_functions

# What FINN raises on a graph it cannot take, besides its FINNError; anything else escaping a step is a bug.
FINN_FAILURES: tuple[type[BaseException], ...] = (AssertionError, KeyError, ValueError, RuntimeError)


class BuildConfig(Protocol):
    """What the runner needs of a step's ``cfg``: FINN's config and a place for progress lines."""

    finn: Any  # finn.builder.build_dataflow_config.DataflowBuildConfig
    failures: tuple[type[BaseException], ...]

    def log(self, msg: str) -> None: ...


@dataclass(frozen=True)
class Step:
    """One build step: ``run(model, cfg) -> model``, placed at FINN's step ``finn_step``."""

    name: str
    run: Callable[[Any, Any], Any]
    finn_step: str
    rewrites: bool = True  # the model it returns is saved as intermediate_models/<finn_step>.onnx

    @property
    def is_finn(self) -> bool:
        """FINN's own step (perhaps amended): logged, timed and quietened as FINN's builder would."""
        return self.name == self.finn_step


class StepFailed(BnnflowError):
    """FINN's step ``step`` failed on this graph; ``first_line`` is its message's first line."""

    def __init__(self, step: str, cause: BaseException) -> None:
        self.step = step
        self.cause = cause
        self.first_line = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
        super().__init__(f"FINN {step} failed: {type(cause).__name__}: {self.first_line}")


def finn_step(name: str) -> Step:
    """FINN's registered step ``name``, run as its builder runs it."""
    return Step(name, lambda model, cfg: step_functions()[name](model, cfg.finn), name)


def amended(name: str, amend: Callable[[Any, Any], Any]) -> Step:
    """FINN's step ``name``, then ``amend(model, cfg) -> model`` on its result, saved as FINN's."""

    def run(model: Any, cfg: Any) -> Any:
        return amend(step_functions()[name](model, cfg.finn), cfg)

    return Step(name, run, name)


def after(finn_name: str, rewrites: bool = False) -> Callable[[Callable[[Any, Any], Any]], Step]:
    """Decorator: bnnflow's step ``fn`` (``fn(model, cfg) -> model``), run after FINN's step ``finn_name``."""

    def wrap(fn: Callable[[Any, Any], Any]) -> Step:
        return Step(fn.__name__, fn, finn_name, rewrites)

    return wrap


def run_steps(model: Any, steps: Sequence[Step], cfg: BuildConfig) -> Any:
    """Run ``steps`` in order on ``model``; FINN's steps are quiet, timed and saved as its builder does."""
    # FINN's own exception type: importable only once finn_env has prepared FINN's settings.
    from finn.util.exception import FINNError

    failures = (FINNError, *cfg.failures)
    inter: Path = cfg.finn.get_intermediate_models_directory()
    log_path = Path(cfg.finn.output_dir) / "build_dataflow.log"
    for step in steps:
        t0 = time.perf_counter()
        if step.is_finn:
            try:
                # FINN prints progress and warnings as it goes; they go to the build log
                # in the output folder, the console gets one line per step.
                with open(log_path, "a") as sink, quiet_finn(sink):
                    print(f"== {step.name}", file=sink)
                    model = step.run(model, cfg)
            except BnnflowError:
                raise
            except failures as exc:
                raise StepFailed(step.name, exc) from exc
        else:
            model = step.run(model, cfg)
        if step.rewrites and cfg.finn.save_intermediate_models:
            model.save(str(inter / f"{step.finn_step}.onnx"))
        if step.is_finn:
            cfg.log(f"  {step.name:<36} {time.perf_counter() - t0:6.1f} s")
    return model


def finn_order(steps: Sequence[Step]) -> list[str]:
    """The FINN step names ``steps`` map to, in list order (for the check against FINN's default order).

    FINN's registered ``step_hw_codegen`` is the code generation that the
    default list runs inside ``step_generate_hardware``, so it maps there.
    """
    return ["step_generate_hardware" if s.finn_step == "step_hw_codegen" else s.finn_step for s in steps]
