"""cupy.cuda, as far as npnn uses it: one device, streams that synchronise (counted)."""

import sys


def _sync_event(what):
    """Count a synchronisation in the stand-in package (looked up, not imported: it
    imports this module)."""
    sys.modules[__package__]._sync_event(what)


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def use(self):
        pass

    def synchronize(self):
        _sync_event("Device.synchronize")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDevice():
        return 0

    @staticmethod
    def deviceSynchronize():
        _sync_event("deviceSynchronize")


runtime = _Runtime()


class Stream:
    null = None
    ptr = 0

    def synchronize(self):
        _sync_event("Stream.synchronize")


Stream.null = Stream()


def get_current_stream():
    return Stream.null
