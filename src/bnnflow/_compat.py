"""Compatibility shims between the pinned library versions.

bnnflow runs brevitas 0.13.0 (pinned by finn-plus 1.6.1) on torch 2.13.0 (the
CPU build). torch 2.13 removed named tensors, but brevitas' ``QuantLayerMixin``
still calls ``Tensor.rename(None)`` on every layer input to drop dimension
names. On an unnamed tensor that call is the identity, so the shim below
restores exactly that case and refuses any other use rather than guessing.
"""

from __future__ import annotations

import warnings

import torch


def _rename_none_only(self: torch.Tensor, *names: object, **rename_map: object) -> torch.Tensor:
    if names == (None,) and not rename_map:
        return self
    raise NotImplementedError("named tensors are not available in this torch build")


def install() -> None:
    if not hasattr(torch.Tensor, "rename"):
        torch.Tensor.rename = _rename_none_only  # type: ignore[attr-defined]
    # brevitas 0.13 imports pkg_resources, which warns on every import.
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="pkg_resources")


install()
