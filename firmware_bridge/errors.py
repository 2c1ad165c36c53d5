"""Errors that carry a message meant for the user (printed without a traceback)."""


class EdgesegError(Exception):
    """A problem with user input or environment; its message says what to do next."""


class MissingDependencyError(EdgesegError):
    """An optional dependency is not installed; the message names the extra to install."""


def require(module: str, extra: str):
    """Import an optional module or raise an error naming the extra that provides it.

    Args:
        module: Importable module name, e.g. ``"rasterio"``.
        extra: The edgeseg extra that installs it, e.g. ``"geo"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: When the module is not installed.

    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{module} is not installed: pip install 'edgeseg[{extra}]'"
        ) from exc
