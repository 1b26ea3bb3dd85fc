"""`python -m sandhive.envd [--host H] [--port P]`: run envd, usually as a sandbox's first process."""

from __future__ import annotations

import gc

from .module_bundle import install

# Start-up creates ~65k objects that all live as long as envd: the collections their allocation triggers
# find nothing and cost ~10 % of the import time. Collect again once they are in, frozen out of every later
# collection's traversal.
gc.disable()
install()  # before the imports below: under gVisor, importing them file by file is most of envd's start

import argparse  # noqa: E402
import os  # noqa: E402

import uvicorn  # noqa: E402

from .app import EnvdApp  # noqa: E402

gc.freeze()
gc.enable()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandhive.envd", description=__doc__)
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=49983, help="TCP port (default: 49983, E2B's)")
    parser.add_argument("--set-clock", action="store_true",
                        help="let /init set the realtime clock (only where envd owns it: a VM guest)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = parser.parse_args(argv)
    app = EnvdApp(system_root=os.environ.get("SANDHIVE_SYSTEM_ROOT"), set_clock=args.set_clock)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                lifespan="on", loop="asyncio", timeout_keep_alive=75, server_header=False, date_header=False,
                # Named, not "auto": envd speaks HTTP/1.1 through httptools and serves no WebSocket, and "auto"
                # would probe for the websockets and wsproto packages (absent) at every start.
                http="httptools", ws="none",
                # Open streams (a watch, a command) never end by themselves: don't wait for them to stop.
                timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
