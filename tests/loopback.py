"""A threaded HTTP server on loopback for tests that need a real socket (a child process, or a client
whose own transport is under test).

Handler threads can outlive the test that started them: a client that gave up (a timeout under test)
leaves a handler writing to a closed socket. The stdlib server prints that as a traceback on stderr,
which then lands in whichever test is capturing output at the time. A client hanging up is the
client's choice, not a server fault, so it is dropped here; any other handler error still prints.
"""

from __future__ import annotations

import contextlib
import http.server
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Errors that mean only "the client went away".
_HUNG_UP = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


class LoopbackServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        #: Set when the test ends: a handler told to stall waits on this rather than a fixed sleep,
        #: so no handler thread lingers into the next test.
        self.released = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], _HUNG_UP):
            return
        super().handle_error(request, client_address)


@contextlib.contextmanager
def serving(server: LoopbackServer) -> Iterator[LoopbackServer]:
    """Run ``server`` on a daemon thread for the block; release stalled handlers and close after."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.released.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
