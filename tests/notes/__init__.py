"""Shared case notes: services, Socket.IO handlers, real server, Yjs interop."""
