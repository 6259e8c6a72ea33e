"""The relay for apps that only speak TCP: runs inside the sandbox (stdlib only, on the
system's python3), listens on $TETHER_SOCKET, starts the app, and pipes each connection
to 127.0.0.1:$PORT in the sandbox's own network namespace. It exits with the app's code.
The app gets $PORT, not $TETHER_SOCKET (the socket is the relay's).

Usage (inside the sandbox): python3 -c "$(this file)" -- APP-ARGV...
"""

import asyncio
import os
import signal
import sys


async def _pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


async def _serve(path, port, argv):
    # the socket is the relay's: an app that saw $TETHER_SOCKET might bind it in the relay's place
    env = {k: v for k, v in os.environ.items() if k != "TETHER_SOCKET"}
    app = await asyncio.create_subprocess_exec(*argv, env=env)

    async def handle(creader, cwriter):
        for _ in range(200):  # the app may still be starting: up to ~10 s
            try:
                ureader, uwriter = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                if app.returncode is not None:
                    cwriter.close()
                    return
                await asyncio.sleep(0.05)
        else:
            cwriter.close()
            return
        await asyncio.gather(_pipe(creader, uwriter), _pipe(ureader, cwriter))

    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = await asyncio.start_unix_server(handle, path, backlog=256)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.send_signal, sig)
    code = await app.wait()
    server.close()
    return code if code >= 0 else 128 - code


def main():
    argv = sys.argv[sys.argv.index("--") + 1:]
    code = asyncio.run(_serve(os.environ["TETHER_SOCKET"], int(os.environ["PORT"]), argv))
    sys.exit(code)


if __name__ == "__main__":
    main()
