"""``edgeseg-run serve``: answer frames from a flight computer's program (docs/protocol.md)."""

from __future__ import annotations

import argparse
import os
import sys

from firmware_bridge.cliutil import (
    non_negative_float,
    positive_float,
    positive_int,
    signals_held,
)
from firmware_bridge.commands.modelargs import add_model_args


def register(subparsers) -> None:
    """Add the ``serve`` sub-command."""
    p = subparsers.add_parser(
        "serve", help="serve a model over the frame protocol (stdio, Unix socket, loopback TCP)",
        description="Serve a segmentation model over the frame protocol of docs/protocol.md. "
        "Frames larger than the model's input are tiled (or, with --resize fit or stretch, "
        "resized to it). Status lines go to stderr.")
    p.add_argument("model", help=".tflite, .onnx or OpenVINO .xml model")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--stdio", action="store_true",
                       help="read requests on stdin, write replies on stdout (one client)")
    where.add_argument("--socket", metavar="PATH", help="listen on a Unix socket")
    where.add_argument("--tcp", metavar="HOST:PORT",
                       help="listen on TCP, loopback only unless --allow-remote (port 0: any)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow a non-loopback --tcp address (the protocol has no authentication)")
    p.add_argument("--max-frame-mb", type=positive_float, default=48.0,
                   help="largest frame payload in MiB (default 48: 4096x4096 RGB)")
    p.add_argument("--timeout", type=non_negative_float, default=30.0,
                   help="seconds a silent connection is kept (0: forever; default 30)")
    p.add_argument("--max-connections", type=positive_int, default=4,
                   help="connections served at once (default 4); frames run one at a time")
    add_model_args(p, bands=False)
    p.set_defaults(func=run)


def _stdio_streams():
    """Protocol streams on the real stdin/stdout, with fd 1 pointed at stderr afterwards.

    A stray print from a runtime's C++ code then cannot corrupt the reply stream.
    """
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    return sys.stdin.buffer, out


def run(args: argparse.Namespace) -> int:
    """Load the model and serve until the stream ends (stdio) or SIGINT/SIGTERM (sockets).

    A Unix socket's file is removed on every way out, a signal that arrives while the
    server starts or closes included.

    Args:
        args: The parsed command line.

    Returns:
        0 once the server stopped.

    Raises:
        EdgesegError: For a bad option, model or address.
    """
    from firmware_bridge.commands.modelargs import load_segmenter
    from firmware_bridge.errors import EdgesegError
    from firmware_bridge.serve.listeners import make_server, parse_tcp
    from firmware_bridge.serve.server import FrameHandler, ServerOptions, serve_stream

    if args.max_frame_mb <= 0 or args.max_connections < 1 or args.timeout < 0:
        raise EdgesegError("--max-frame-mb must be > 0, --max-connections >= 1, --timeout >= 0")
    tcp = parse_tcp(args.tcp, args.allow_remote) if args.tcp else None
    model = load_segmenter(args)
    options = ServerOptions(max_frame_bytes=int(args.max_frame_mb * 2**20),
                            timeout=args.timeout or None, max_connections=args.max_connections)
    handler = FrameHandler(model, options)
    desc = (f"{args.model}: {model.num_classes} classes, {model.channels} channels, "
            f"tile {model.tile[0]}x{model.tile[1]}"
            + ("" if model.resize == "tile" else f", frames resized ({model.resize})"))
    if args.stdio:
        rfile, wfile = _stdio_streams()
        print(f"edgeseg-run serve: {desc}; reading frames on stdin", file=sys.stderr, flush=True)
        served = serve_stream(rfile, wfile, handler)
        wfile.close()
        print(f"edgeseg-run serve: {served} frame(s) served", file=sys.stderr)
        return 0
    server = None
    try:  # a signal at any point after the bind still closes the server and removes its socket
        with signals_held():
            server = make_server(handler, unix=args.socket, tcp=tcp)
        addr = server.server_address
        where = f"unix:{addr}" if args.socket else f"tcp:{addr[0]}:{addr[1]}"
        print(f"edgeseg-run serve: {desc}; listening on {where}", file=sys.stderr, flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        print("edgeseg-run serve: stopped", file=sys.stderr)
    finally:
        if server is not None:
            with signals_held():
                server.server_close()
    return 0
