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
    return (
        f"Host: {_fmt(osf.get('name') or osf.get('id'))} ({_fmt(osf.get('arch'))}) · Docker: {dock} · "
        f"GPUs: {names} · driver: {drv}"
    )
