"""The frame server: the wire protocol, the server loop, its listeners, and a C client."""
