"""The error hierarchy. Each error carries what went wrong, where, and what to do; the CLI maps
the class to an exit code (DESIGN.md: 2 user input, 3 a stage failed, 4 the device failed)."""
from __future__ import annotations


class EdgeCompressError(Exception):
    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  -> {self.hint}"


class InputError(EdgeCompressError):
    """The user's input is wrong: arguments, model, weights, data, output folder."""

    exit_code = 2


class ProfileError(InputError):
    """A target profile (or a --set override) does not match the schema."""


class StageError(EdgeCompressError):
    """A pipeline stage failed on valid input (export, quantization, ...)."""

    exit_code = 3

    def __init__(self, stage: str, message: str, *, hint: str | None = None):
        super().__init__(f"[{stage}] {message}", hint=hint)
        self.stage = stage


class ToleranceError(StageError):
    """An exported model disagrees with the original beyond the profile's tolerance."""

    def __init__(self, message: str, *, report: str, hint: str | None = None):
        super().__init__("verify", f"{message}\n{report}", hint=hint)
        self.report = report


class DeviceError(EdgeCompressError):
    """The device (or the local runner process standing in for it) failed or is unreachable."""

    exit_code = 4
