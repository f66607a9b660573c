"""Huizhen's media worker: an asyncio aiortc process, separate from the Socket.IO web workers."""
