"""The built-in sandbox upstream (see `gateway.sandbox.server`)."""

from gateway.sandbox.server import Sandbox, SandboxConfig

__all__ = ["Sandbox", "SandboxConfig"]
