"""A TF-Serving-compatible stand-in server and its locally built image (see TFSERVING_CONTRACT.md)."""
