"""Request bodies over the limit (1 MiB) get 413: refused at once by their
Content-Length, and counted while the stream is read (a chunked body, or one
that lies about its length), so no more than the limit is ever buffered."""

from flowmetal.server.errors import ApiError, error_response

MAX_BODY = 1024 * 1024


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
                    return await error_response(413, BodyTooLarge(self.limit).message,
                                                {"Connection": "close"})(scope, receive, send)
        seen = 0

        async def counting_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)
