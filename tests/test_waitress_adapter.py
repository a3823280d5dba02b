"""What server.py uses of waitress's internals, each as it is in the waitress minor version pyproject.toml pins.

A waitress release that renames or reshapes one of these fails here by name, before the behaviour
built on it (batched accepts, the request deadline, the bounds per client, JSON errors, the clean
stop) fails somewhere less clear.
"""

import inspect
from importlib.metadata import version

import pytest
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ErrorTask, Task, ThreadedTaskDispatcher, WSGITask

from backup_api import create_app, server
from tests.helpers import SECRET

# (owner, attribute, its parameters after self, or None for a plain attribute checked on an instance)
METHODS = [
    (TcpWSGIServer, "__init__", ["application", "map", "_start", "_sock", "dispatcher", "adj", "sockinfo",
                                 "bind_socket", "kw"]),
    (TcpWSGIServer, "handle_accept", []),
    (TcpWSGIServer, "maintenance", ["now"]),
    (TcpWSGIServer, "pull_trigger", []),
    (HTTPChannel, "__init__", ["server", "sock", "addr", "adj", "map"]),
    (HTTPChannel, "received", ["data"]),
    (HTTPChannel, "service", []),
    (HTTPChannel, "del_channel", ["map"]),
    (HTTPChannel, "handle_close", []),
    (HTTPChannel, "writable", []),
    (Task, "service", []),  # AnsweredTask: the bytes a connection held, answered once its task wrote
    (WSGITask, "get_environment", []),
    (WSGITask, "build_response_header", []),  # PeerTask: every answer closes its connection while draining
    (WSGITask, "set_close_on_finish", []),
    (WSGITask, "write", ["data"]),
    (ErrorTask, "execute", []),
    (ThreadedTaskDispatcher, "set_thread_count", ["count"]),
    (ThreadedTaskDispatcher, "shutdown", ["cancel_pending", "timeout"]),
    (wasyncore.dispatcher, "close", []),
]


def test_the_pinned_minor_version_is_installed():
    assert version("waitress").startswith("3.0."), version("waitress")


@pytest.mark.parametrize(("owner", "name", "parameters"), METHODS,
                         ids=[f"{owner.__name__}.{name}" for owner, name, _ in METHODS])
def test_each_method_the_adapter_overrides_or_calls_is_there_with_its_parameters(owner, name, parameters):
    found = inspect.signature(getattr(owner, name))
    assert [p for p in found.parameters if p != "self"] == parameters


def test_the_functions_and_attributes_it_reads_are_there(tmp_path):
    assert list(inspect.signature(wasyncore.loop).parameters)[:4] == ["timeout", "use_poll", "map", "count"]
    assert callable(wasyncore.close_all)
    assert isinstance(Adjustments(host="127.0.0.1", port=0).listen, list)
    app = create_app({"DATABASE": str(tmp_path / "b.db"), "JWT_SECRET": SECRET})
    made = server.create(app, port=0)
    try:
        for name in ("_map", "active_channels", "adj", "task_dispatcher", "effective_host", "effective_port",
                     "channel_class", "trigger"):
            assert hasattr(made, name), name
        for name in ("connection_limit", "asyncore_loop_timeout", "asyncore_use_poll"):
            assert hasattr(made.adj, name), name
        assert HTTPChannel.error_task_class is ErrorTask and HTTPChannel.task_class is WSGITask
        for name in ("request", "requests", "will_close", "close_when_flushed", "total_outbufs_len", "addr",
                     "outbuf_lock"):
            assert name in inspect.getsource(HTTPChannel), name
    finally:
        made.task_dispatcher.shutdown()
        made.close()
