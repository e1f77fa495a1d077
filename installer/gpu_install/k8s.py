"""gpu-install k8s: the Kubernetes objects a cluster needs for the GPU nodes gpu-install readies.

``gpu-install k8s runtimeclass`` prints the RuntimeClass whose handler is the containerd runtime gpu-install adds
to the CRI plugin (``nvidia``, the containerd_config module's ``runtime_name``): a pod that names it in
``runtimeClassName`` runs under NVIDIA's runtime on a node whose containerd does not make it the default
(``containerd_default_runtime: false``). The object is Kubernetes' ``node.k8s.io/v1`` RuntimeClass: ``handler`` names
"the underlying runtime and configuration that the CRI implementation will use", a lowercase DNS label, and
``scheduling.nodeSelector`` keeps its pods on the nodes that have that handler
(https://kubernetes.io/docs/concepts/containers/runtime-class/, read 2026-12-07). Nothing here talks to a cluster:
the output is for ``kubectl apply -f -``.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

from .collection import module_utils
from .errors import GpuInstallError, codes

API_VERSION = "node.k8s.io/v1"
KIND = "RuntimeClass"
# RFC 1123 label (a RuntimeClass's handler) and subdomain (its name), as Kubernetes validates them.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A label key (an optional DNS-subdomain prefix and a name) and value, as Kubernetes validates them.
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
MANAGED_BY = {"app.kubernetes.io/managed-by": "gpu-install"}


def handler() -> str:
    """The containerd runtime name gpu-install configures (containerd_config's ``runtime_name`` default)."""
    return str(module_utils("containerd").Options().runtime_name)


def _valid_label(key: str, value: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return False
    return value == "" or (len(value) <= 63 and bool(_LABEL_NAME.match(value)))


def node_selector(pairs: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` strings as a nodeSelector; a malformed one is exit 4 naming it."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not _valid_label(key, value):
            raise GpuInstallError(
                codes.INVALID_INPUT,
                f"--node-selector {pair!r} is not a Kubernetes label KEY=VALUE: give it as "
                "nvidia.com/gpu.present=true (a key of letters, digits, '-', '_' and '.', with an optional DNS "
                "prefix).",
            )
        out[key] = value
    return out


def runtime_class(name: str | None = None, selector: dict[str, str] | None = None) -> dict[str, Any]:
    """The RuntimeClass object: ``name`` (default the handler), handler ``nvidia``, an optional nodeSelector."""
    runtime = handler()
    name = name or runtime
    if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        raise GpuInstallError(
            codes.INVALID_INPUT,
            f"--name {name!r} is not a valid RuntimeClass name: use lowercase letters, digits, '-' and '.' "
            "(a DNS subdomain), such as nvidia.",
        )
    if not _DNS_LABEL.match(runtime):
        raise GpuInstallError(codes.UNSUPPORTED, f"the runtime name {runtime!r} is not a DNS label Kubernetes accepts.")
    obj: dict[str, Any] = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "labels": dict(MANAGED_BY)},
        "handler": runtime,
    }
    if selector:
        obj["scheduling"] = {"nodeSelector": dict(selector)}
    return obj


def to_yaml(obj: dict[str, Any]) -> str:
    """The object as one YAML document (key order kept), headed by a comment saying how to use it."""
    import yaml

    head = (
        "# RuntimeClass for the GPU nodes gpu-install readies: its handler is the runtime gpu-install adds to\n"
        "# containerd's CRI plugin. Apply with: kubectl apply -f -\n"
        "# Pods use it with spec.runtimeClassName: " + str(obj["metadata"]["name"]) + "\n"
    )
    return head + yaml.safe_dump(obj, sort_keys=False, default_flow_style=False)


def run(args: argparse.Namespace) -> int:
    from .output import emit_json

    if args.k8s_command != "runtimeclass":  # argparse allows no other
        raise GpuInstallError(codes.USAGE, f"gpu-install k8s knows runtimeclass, not {args.k8s_command}.")
    obj = runtime_class(args.name, node_selector(args.node_selector))
    if getattr(args, "json", False):
        emit_json({"runtimeclass": obj, "yaml": to_yaml(obj)})
    else:
        import sys

        sys.stdout.write(to_yaml(obj))
    return 0
