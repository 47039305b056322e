"""What the figures were measured on: hardware, kernel, versions, load."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata

from .servers import REPO, nginx_binary

PACKAGES = ["wsgipipe", "gunicorn", "werkzeug", "whitenoise", "matplotlib"]


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        return "unknown"
    return f"{kib / (1 << 20):.1f} GiB"


def _tool_version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "not installed"
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def _package(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def load_average() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def describe() -> dict[str, str]:
    nginx = nginx_binary()
    info = {
        "date (UTC)": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "CPU": f"{_cpu_model()}, {os.cpu_count()} cores",
        "memory": _memory(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "commit": _commit(),
    }
    info.update({name: _package(name) for name in PACKAGES})
    info["nginx"] = _tool_version([nginx, "-v"]) if nginx else "not installed"
    info["wrk"] = _tool_version(["wrk", "-v"])
    info["curl"] = _tool_version(["curl", "--version"])
    info["load average at start (1/5/15 min)"] = load_average()
    return info
