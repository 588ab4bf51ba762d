"""Run `kag ingest` in this process and SIGKILL it at the Nth call of a chosen store method.

Usage: python crash_driver.py MODULE:CLASS.METHOD N before|after -- KAG ARGS...
The kill is a real `kill -9` of this process: no cleanup, no finally blocks, no flushes."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys


def main() -> None:
    target, nth, when = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    assert sys.argv[4] == "--"
    module_name, attr = target.split(":")
    cls_name, method_name = attr.split(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    original = getattr(cls, method_name)
    calls = {"n": 0}

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == nth and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*args, **kwargs)
        if calls["n"] == nth and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    setattr(cls, method_name, wrapper)
    from kag.cli import main as kag_main

    sys.argv = ["kag", *sys.argv[5:]]
    kag_main()


if __name__ == "__main__":
    main()
