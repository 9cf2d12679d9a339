"""Request bodies over the limit (1 MiB) get 413: refused at once by their
Content-Length, and counted while the stream is read (a chunked body, or one
that lies about its length), so no more than the limit is ever buffered."""

from flowmetal.server.errors import ApiError, error_response

MAX_BODY = 1024 * 1024


DRAIN = 16 * 1024 * 1024  # bytes read and thrown away so the client hears the 413 (beyond: the connection closes)


async def drain(receive, more):
    """Read and discard the rest of a refused body (up to DRAIN bytes): a client still sending
    would otherwise see its connection reset instead of the 413."""
    seen = 0
    while more and seen < DRAIN:
        message = await receive()
        if message["type"] != "http.request":
            return
        seen += len(message.get("body", b""))
        more = message.get("more_body", False)


class BodyTooLarge(ApiError):
    def __init__(self, limit):
        super().__init__(413, f"the request body is larger than the limit of {limit // 1024} KiB")


class BodyLimit:
    def __init__(self, app, limit=MAX_BODY):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.limit
                except ValueError:
                    too_big = False
                if too_big:
                    await drain(receive, True)
                    return await error_response(413, BodyTooLarge(self.limit).message,
                                                {"Connection": "close"})(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    await drain(receive, message.get("more_body", False))
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)
