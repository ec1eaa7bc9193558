"""Generated gRPC stubs of the MINOOTS v1 wire contract (the .proto files beside this one)."""
