"""Errors a user can act on. The CLI prints their message alone, without a traceback."""

from __future__ import annotations


class DnaEmbedError(Exception):
    """Base class: bad input, bad config or a refused output; never a bug of ours."""


class ConfigError(DnaEmbedError, ValueError):
    """A config value is invalid or contradicts another."""


class WiringError(ConfigError):
    """A run's stages do not fit together: one needs a column that no stage before it makes
    (a combination of settings that builds no working pipeline)."""


class InputError(DnaEmbedError, ValueError):
    """An input file is missing, unreadable or malformed."""


class OutputError(DnaEmbedError):
    """The output location holds something we must not overwrite or cannot read."""


class StorageError(DnaEmbedError):
    """The object store failed a request after its retries (down, refusing, unreachable)."""


class ClusterError(DnaEmbedError):
    """The cluster lost what the run needs and did not get it back in time (a rerun resumes)."""


def find_user_error(exc: BaseException) -> DnaEmbedError | None:
    """Our error inside Ray's wrappers (RayTaskError, UserCodeException), if there is one."""
    seen = set()
    stack = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, DnaEmbedError):
            # Ray re-raises a task's error as a subclass of it whose message is the remote
            # traceback; the original, with its own message, is its `cause`.
            original = getattr(e, "cause", None)
            return original if isinstance(original, DnaEmbedError) else e
        cause = getattr(e, "cause", None)  # RayTaskError keeps the original here
        if isinstance(cause, BaseException):
            stack.append(cause)
        stack.extend([e.__cause__, e.__context__])
    return None
