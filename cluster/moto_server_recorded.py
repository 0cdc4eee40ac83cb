"""moto's S3 server, recording every request so that a restart can replay them (cluster/s3.sh).

moto keeps its state in memory. With MOTO_ENABLE_RECORDING set, it appends each request it serves to
MOTO_RECORDER_FILEPATH, and ``POST /moto-api/recorder/replay-recording`` replays that file: a
restarted server gets its buckets and objects back. moto's own ``moto_server`` serves requests on
threads and writes each request's line to the file unlocked, so concurrent uploads interleave
their lines and the recording cannot be replayed. This is moto's server with the application
called by one request at a time (connections stay concurrent); the recorder's own endpoints are
left outside the lock, since a replay sends its requests to this same server.

    python cluster/moto_server_recorded.py -H 127.0.0.1 -p PORT
"""

from __future__ import annotations

import argparse
import os
import threading

from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    one_at_a_time = threading.Lock()

    def serialized(environ, start_response):
        if environ.get("PATH_INFO", "").startswith("/moto-api/"):
            return app(environ, start_response)
        with one_at_a_time:
            return app(environ, start_response)

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
