"""The stand-in's waitress channel: its fault drop-after-commit closes a connection without an answer."""

from backup_api.server import JSONErrorChannel, PeerTask

# Where a view asks for the connection to be closed unanswered (a key of the WSGI environ).
DROP_CONNECTION = "backup_api.drop_connection"


class StandInTask(PeerTask):
    """A request's task that writes nothing, and closes the connection, when the app asked for a drop."""

    def write(self, data):
        if self.environ.get(DROP_CONNECTION):
            self.wrote_header = True  # nothing is ever sent: no status line, no headers
            self.close_on_finish = True
            return
        super().write(data)


class StandInChannel(JSONErrorChannel):
    """The stand-in's HTTP channel: its errors in JSON, and its faults able to drop a connection."""

    task_class = StandInTask
