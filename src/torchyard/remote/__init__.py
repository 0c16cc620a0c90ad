"""The client side of a team server's workspace (``Workspace(url=..., token=...)``): an HTTP client,
and the workspace and run objects that answer the SDK's calls over it."""
