"""The readiness report a daemon (or a server started with --ready-fd)
writes on its pipe, and how the waiting side reads it."""

from __future__ import annotations

import os

from starlingpy.process.daemon import read_report, reporter


def written(*report_args) -> bytes:
    read_end, write_end = os.pipe()
    report = reporter(write_end)
    report(*report_args)
    report("a second report does not count")
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read()


def test_success_carries_its_summary():
    assert read_report(written(None, "listening on 127.0.0.1:4242")) == (
        None, "listening on 127.0.0.1:4242")


def test_a_failure_carries_its_message():
    assert read_report(written("cannot listen: Address already in use")) == (
        "cannot listen: Address already in use", "")


def test_a_pipe_closed_without_a_report_is_a_failure():
    error, _ = read_report(b"")
    assert error == "the process exited before it was ready"
