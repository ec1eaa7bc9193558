"""gRPC API: the wire contract served on uvloop, leader routing, event streaming, and the client SDK."""
