"""Sphinx extension: the kernels that execute the chapters talk over CurveZMQ-encrypted TCP.

ipykernel 7.4 logs "Kernel is running over TCP without encryption" each time a kernel starts
without CurveZMQ keys: once per chapter in the build log. jupyter_client 8.10's ``KernelManager``
provisions those keys when its ``transport_encryption`` policy is ``"auto"`` and the kernelspec
declares ``"curve"`` support (ipykernel's does), but the policy defaults to ``"disabled"``, and
myst-nb starts its kernels (through jupyter-cache and nbclient) with no configuration that could
set it. This extension makes ``"auto"`` the default of the build process, so each chapter's
kernel is started encrypted: the warning's advice followed, not its output hidden. Where the
policy does not exist (jupyter_client before 8.10) or pyzmq lacks CurveZMQ, nothing changes.
"""

from __future__ import annotations

from typing import Any

from sphinx.application import Sphinx


def _encrypt_kernel_transport() -> bool:
    try:
        import zmq
        from jupyter_client.manager import KernelManager
    except ImportError:
        return False
    policy = getattr(KernelManager, "transport_encryption", None)
    if policy is None or not zmq.has("curve"):
        return False
    policy.default_value = "auto"
    return True


def setup(app: Sphinx) -> dict[str, Any]:
    _encrypt_kernel_transport()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
