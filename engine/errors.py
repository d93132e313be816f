"""Engine errors: one tree, each with the exit code the CLI gives it.

    ContainerError (exit 1)                    base; message is one line for the user
    ├── InvalidReference                       "invalid reference format"
    ├── ImageNotFound                          no such image locally
    ├── ContainerNotFound
    ├── VolumeNotFound                         no such volume
    ├── RegistryError                          HTTP / protocol failure talking to a registry
    │   ├── AuthError                          401/403: denied, or needs login
    │   ├── ManifestUnknown                    MANIFEST_UNKNOWN / NAME_UNKNOWN / 404
    │   └── RegistryUnavailable                network down, retries exhausted
    ├── VerificationError                      digest/size/diff_id mismatch
    ├── UnsupportedMediaType                   schema1, unknown layer types, non-image artifacts
    ├── PlatformMismatch                       no manifest for the requested platform
    ├── LayerError                             a layer that cannot be unpacked safely
    ├── StoreError                             bad --root, corrupt db, newer schema, disk full
    ├── Conflict                               name in use, image in use by a container
    └── RunError (exit 125)                    cannot create / start the container
        ├── CommandNotExecutable (exit 126)
        └── CommandNotFound (exit 127)

The boundary: cas/ raises CasError subclasses and schema/ SchemaError subclasses (and a damaged
database raises sqlite3's or peewee's DatabaseError from any query). `translate()` turns each into a
StoreError with one line for the user, and `boundary()` applies it where the engine is entered
(engine/service.py), so nothing above the engine sees an error outside this tree.
"""

from __future__ import annotations

TYPE_CHECKING = False        # (typing's own import costs `run` 3 ms; mypy reads this block as true)
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    F = TypeVar("F", bound=Callable[..., Any])


class ContainerError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InvalidReference(ContainerError):
    pass


class ImageNotFound(ContainerError):
    pass


class ContainerNotFound(ContainerError):
    pass


class VolumeNotFound(ContainerError):
    pass


class RegistryError(ContainerError):
    pass


class AuthError(RegistryError):
    pass


class ManifestUnknown(RegistryError):
    pass


class RegistryUnavailable(RegistryError):
    pass


class VerificationError(ContainerError):
    pass


class UnsupportedMediaType(ContainerError):
    pass


class PlatformMismatch(ContainerError):
    pass


class LayerError(ContainerError):
    pass


class StoreError(ContainerError):
    pass


class Conflict(ContainerError):
    pass


class RunError(ContainerError):
    exit_code = 125


class CommandNotExecutable(RunError):
    exit_code = 126


class CommandNotFound(RunError):
    exit_code = 127


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


def translate(e: BaseException, *, exit_code: int | None = None) -> ContainerError | None:
    """The engine error for an error from cas/ or schema/ (or a damaged database), else None.

    exit_code: the code the translated error carries (run uses 125, docker's engine failure)."""
    from container.cas.errors import CasError, IngestBusy, StoreLocked
    from container.schema.errors import is_database_error

    if isinstance(e, ContainerError):
        return None
    if isinstance(e, (StoreLocked, IngestBusy)):
        return StoreError(_first_line(e), exit_code=exit_code)
    if isinstance(e, CasError):
        # a digest from a tampered row that is not a digest, a blob the database promises but the
        # disk lacks, a guarded delete that refused
        return StoreError(f"the store is damaged: {_first_line(e)} (see `container fsck`)", exit_code=exit_code)
    if is_database_error(e):
        return StoreError(f"metadata database error: {_first_line(e)} (the database is damaged, or was not "
                          "written by this version of container)", exit_code=exit_code)
    return None


class boundary:
    """`with boundary():` errors from cas/ and schema/ leave as engine errors (translate); anything
    else unchanged. (A class, not contextlib.contextmanager: contextlib's import costs `run` 1 ms.)"""
    __slots__ = ("exit_code",)

    def __init__(self, *, exit_code: int | None = None) -> None:
        self.exit_code = exit_code

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: object, e: BaseException | None, tb: object) -> None:
        if isinstance(e, Exception):
            t = translate(e, exit_code=self.exit_code)
            if t is not None:
                raise t from e


def entry(fn: F) -> F:
    """A facade method (engine/service.py, service_containers.py) run inside the error boundary.
    (functools.wraps by hand: functools' import costs `run` a millisecond.)"""
    def wrapper(*args: Any, **kw: Any) -> Any:
        with boundary():
            return fn(*args, **kw)
    for a in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, a, getattr(fn, a))
    wrapper.__dict__.update(fn.__dict__)
    wrapper.__wrapped__ = fn  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]
