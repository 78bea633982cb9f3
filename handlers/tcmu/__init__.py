"""The TCMU ring: cffi over the kernel UAPI, device discovery, the command loop."""
