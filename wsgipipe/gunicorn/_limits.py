"""What the offloading worker checks before it serves: the gunicorn version and RLIMIT_NOFILE."""

from __future__ import annotations

import resource
from typing import Any

import gunicorn

from .._errors import ConfigurationError

__all__ = ["SUPPORTED", "check_nofile", "check_version"]

#: The gunicorn releases whose gthread internals the worker was tested on
#: (``>= 27.0, < 27.1``; pyproject.toml pins the same range).
SUPPORTED = ((27, 0), (27, 1))

#: Descriptors a worker needs besides its transfers: listeners, pipes, logs, the app's own.
SPARE = 64


def check_version(version: tuple[int, ...] = tuple(gunicorn.version_info)) -> None:
    """Refuse a gunicorn whose private worker internals were never tested."""
    low, high = SUPPORTED
    if not low <= tuple(version[:2]) < high:
        found = ".".join(map(str, version))
        raise ConfigurationError(
            f"wsgipipe's OffloadWorker supports gunicorn >= {low[0]}.{low[1]}, "
            f"< {high[0]}.{high[1]} (found {found}); install a supported gunicorn "
            'or use worker_class = "gthread"'
        )


def check_nofile(cfg: Any, log: Any) -> int:
    """Make room for ``worker_connections`` offloaded transfers; returns the soft limit.

    Each offloaded transfer holds two descriptors, the client socket and the
    file. The soft limit is raised toward the hard one when it is too low;
    if even the hard limit is too low, a warning says what to change.
    """
    need = 2 * cfg.worker_connections + cfg.threads + SPARE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return int(soft)
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < need:
        log.warning(
            "RLIMIT_NOFILE is %d but worker_connections=%d offloaded transfers need "
            "about %d descriptors (a socket and a file each): raise the limit "
            "(ulimit -n, LimitNOFILE=) or lower worker_connections",
            target,
            cfg.worker_connections,
            need,
        )
    else:
        log.info("raised RLIMIT_NOFILE from %d to %d for offloaded transfers", soft, target)
    return int(target)
