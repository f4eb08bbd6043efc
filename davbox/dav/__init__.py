"""The WebDAV side of davbox: WsgiDAV app assembly, provider, authentication, state."""
