"""gpu-install k8s: the Kubernetes objects a cluster needs for gpu-install's GPU nodes (logic in gpu_install.k8s)."""

from __future__ import annotations

from ..k8s import run

__all__ = ["run"]
