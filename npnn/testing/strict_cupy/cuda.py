"""cupy.cuda, as far as npnn uses it: one device, streams that synchronise (counted)."""

import sys
from typing import Any, ClassVar, Optional


def _sync_event(what: str) -> None:
    """Count a synchronisation in the stand-in package (looked up, not imported: it
    imports this module)."""
    sys.modules[__package__]._sync_event(what)


class Device:
    def __init__(self, device: Optional[int] = None) -> None:
        self.id = 0 if device is None else int(device)

    def use(self) -> None:
        pass

    def synchronize(self) -> None:
        _sync_event("Device.synchronize")

    def __enter__(self) -> "Device":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount() -> int:
        return 1

    @staticmethod
    def getDevice() -> int:
        return 0

    @staticmethod
    def deviceSynchronize() -> None:
        _sync_event("deviceSynchronize")


runtime = _Runtime()


class Stream:
    null: ClassVar["Stream"]    # the null stream, set below
    ptr = 0

    def synchronize(self) -> None:
        _sync_event("Stream.synchronize")


Stream.null = Stream()


def get_current_stream() -> Stream:
    return Stream.null
