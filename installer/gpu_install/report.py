"""Human renderings of facts, plans and run summaries."""

from __future__ import annotations

from typing import Any

from .output import console


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def print_facts(facts: dict[str, Any]) -> None:
    from rich.table import Table

    con = console()
    osf = facts.get("os") or {}
    docker = facts.get("docker") or {}
    driver = facts.get("driver") or {}
    kernel = facts.get("kernel") or {}
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    os_name = osf.get("name") or osf.get("id")
    table.add_row(
        "OS", f"{_fmt(os_name)} ({_fmt(osf.get('family'))}, {_fmt(osf.get('codename'))}, {_fmt(osf.get('arch'))})"
    )
    flavour = docker.get("flavour")
    table.add_row(
        "Docker",
        f"{flavour} {_fmt(docker.get('version'))}, config {_fmt(docker.get('config_path'))}"
        if flavour
        else "not installed",
    )
    lines = engine_summaries(facts)
    for name, label in (("containerd", "containerd"), ("podman", "Podman"), ("kubelet", "kubelet")):
        table.add_row(label, lines.get(name, "not installed"))
    table.add_row("Engines", f"{_engines_text(facts)} (auto's choice; gpu_install_container_engines decides)")
    gpus = facts.get("gpus") or []
    if gpus:
        for i, gpu in enumerate(gpus):
            label = gpu.get("name") or f"NVIDIA device {gpu.get('device_id')}"
            table.add_row("GPU" if i == 0 else "", f"{label} at {gpu.get('pci_address')} {_fmt(gpu.get('uuid'))}")
    else:
        table.add_row("GPU", "none found")
    table.add_row("Driver", f"{_fmt(driver.get('version'))} loaded" if driver.get("loaded") else "not loaded")
    table.add_row(
        "Kernel",
        f"{_fmt(kernel.get('release'))}, headers {'installed' if kernel.get('headers_installed') else 'missing'}",
    )
    table.add_row("Secure Boot", _fmt(facts.get("secure_boot")))
    con.print(table)
    problems = facts.get("problems") or []
    if problems:
        con.print()
        for p in problems:
            mark = "[red]refused[/red]" if p.get("refuses") else "[yellow]note[/yellow]"
            con.print(f"{mark} {p.get('code')}: {p.get('message')}")
    con.print()
    con.print("[green]supported[/green]" if facts.get("supported") else "[red]not supported[/red]")


def engine_summaries(facts: dict[str, Any]) -> dict[str, str]:
    """One line per engine found (and the kubelet), as module_utils/engines.py words them."""
    from .collection import module_utils

    return dict(module_utils("engines").summaries(facts))


def _engines_text(facts: dict[str, Any]) -> str:
    """The engines gpu-install configures, e.g. "docker (to install), podman"."""
    from .collection import module_utils

    return str(module_utils("engines").engines_line(facts))


def engine_changes(facts: dict[str, Any], changes: list[Any]) -> list[tuple[str, str, list[Any]]]:
    """(engine, its summary or "to install", the changes of the role that configures it) per engine configured."""
    from .collection import module_utils

    engines = module_utils("engines")
    summaries = engines.summaries(facts)
    out = []
    for name in facts.get("engines") or []:
        role = engines.ROLE_OF.get(name)
        mine = [c for c in changes if getattr(c, "role", None) == role or getattr(c, "role", "").endswith(f".{role}")]
        out.append((str(name), summaries.get(name, "not installed yet: gpu-install installs it"), mine))
    return out


def host_line(facts: dict[str, Any]) -> str:
    """One line about the host a plan or run was computed for."""
    if not facts:
        return "Host: not detected"
    osf = facts.get("os") or {}
    docker = facts.get("docker") or {}
    driver = facts.get("driver") or {}
    gpus = facts.get("gpus") or []
    names = ", ".join(str(g.get("name") or g.get("device_id") or "NVIDIA GPU") for g in gpus) or "none"
    dock = f"{docker.get('flavour')} {_fmt(docker.get('version'))}" if docker.get("flavour") else "not installed"
    drv = f"{driver.get('version')}" if driver.get("loaded") else "not loaded"
    line = (
        f"Host: {_fmt(osf.get('name') or osf.get('id'))} ({_fmt(osf.get('arch'))}) · Docker: {dock} · "
        f"GPUs: {names} · driver: {drv}"
    )
    if facts.get("engines"):
        line += f" · engines: {_engines_text(facts)}"
    return line
