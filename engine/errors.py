"""Engine errors: one tree, each with the exit code the CLI gives it.

    ContainerError (exit 1)                    base; message is one line for the user
    ├── InvalidReference                       "invalid reference format"
    ├── ImageNotFound                          no such image locally
    ├── ContainerNotFound
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
"""

from __future__ import annotations


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
